"""Errors of eva-llm: files it needs that are not there."""

from __future__ import annotations

from eva_core import EvaError, MissingDataError

__all__ = ["MissingCheckpointError", "MissingDataError"]


class MissingCheckpointError(EvaError, FileNotFoundError):
    """A model file (e.g. a packaged GGUF) is not installed; the message names the pip command."""
