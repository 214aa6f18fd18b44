"""eva-nlu's own error: a data file or row that cannot be read as the task's text."""

from __future__ import annotations

from eva_core.errors import EvaError

__all__ = ["DataFormatError"]


class DataFormatError(EvaError, ValueError):
    """A data file or row lacks a column the task needs, or holds a value that cannot be read."""
