"""Training (torch): the FR MLP, deep ensembles, leave-one-source-out runs and byte-stable export.

This is the only engine package that imports torch. Without torch installed, importing it
raises ``TrainingUnavailable``, both a ``UsageError`` (the CLI prints one line) and an
``ImportError``; the rest of the engine imports and runs without torch.
"""

from engine.errors import UsageError


class TrainingUnavailable(UsageError, ImportError):
    """torch is not installed, so nothing can be trained."""


try:
    import torch  # noqa: F401
except ModuleNotFoundError as error:  # pragma: no cover - exercised only without torch
    raise TrainingUnavailable(
        "training needs torch, which is not installed: pip install 'model-guard[train]'"
    ) from error
