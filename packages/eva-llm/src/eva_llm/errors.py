"""Errors of eva-llm: files it needs that are not there."""

from __future__ import annotations

from eva_core import EvaError
from eva_core import MissingDataError as _CoreMissingDataError

__all__ = ["MissingCheckpointError", "MissingDataError"]


class MissingCheckpointError(EvaError, FileNotFoundError):
    """A model file (e.g. a packaged GGUF) is not installed; the message names the pip command."""


class MissingDataError(_CoreMissingDataError):
    """The real-data folder or one of its files is missing; the message names ``EVA_DATA_DIR``."""
