"""model-guard engine: a pure library for guarding a registry of learned video-quality models."""

__version__ = "0.1.0"
