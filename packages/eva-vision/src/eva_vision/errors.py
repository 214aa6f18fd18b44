"""Errors of eva-vision: data files that do not hold what their format promises."""

from __future__ import annotations

from eva_core.errors import EvaError

__all__ = ["DataFormatError"]


class DataFormatError(EvaError, ValueError):
    """A data file exists but does not hold what its format promises (an IDX file, an image array)."""
