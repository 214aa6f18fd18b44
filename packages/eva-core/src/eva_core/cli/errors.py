"""What the ``eva`` command line reports as a user mistake (one line on stderr, exit status 1)."""

from __future__ import annotations

from ..errors import EvaError

__all__ = ["MissingModelError", "MissingStateError", "UnknownDomainError", "UnreadableDataError"]


class UnknownDomainError(EvaError, ValueError):
    """``--domain`` names no installed eva plugin; the message lists the installed ones."""


class MissingModelError(EvaError, FileNotFoundError):
    """The MODEL argument is a path that does not exist, or no installed domain can load it."""


class UnreadableDataError(EvaError, ValueError):
    """The DATA file is missing, unreadable, or of a kind the chosen domain does not read."""


class MissingStateError(EvaError, FileNotFoundError):
    """A folder given as STATE_DIR holds no saved :class:`eva_core.EvaState`."""
