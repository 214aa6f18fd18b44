"""Errors of eva-llm: model files it needs that are not installed."""

from __future__ import annotations

from eva_core import EvaError

__all__ = ["MissingCheckpointError"]


class MissingCheckpointError(EvaError, FileNotFoundError):
    """A model file (e.g. a packaged GGUF) is not installed; the message names the pip command."""
