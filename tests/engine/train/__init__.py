"""Tests for engine.train (skipped as a whole when torch is absent)."""
