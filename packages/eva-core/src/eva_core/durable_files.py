"""Files written so that a kill, a crash or a full disk leaves the old contents or the new, never half.

Used by :meth:`~eva_core.EvaState.save` (fresh names, then one rename of the manifest commits) and by fit
checkpoints (a temporary name renamed into place). Every write is flushed to disk before the rename that
publishes it, and the folder is flushed after, so the rename itself survives a power loss.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["remove_quietly", "replace_atomically", "sync_file", "sync_folder", "write_new"]


def write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, which must not exist yet (never another file's bytes), and flush it to disk.

    Raises:
        FileExistsError: ``path`` exists.
        OSError: the disk refused the write (the partial file is left to the caller to remove).
    """
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_atomically(final: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary)`` (a hidden name beside ``final``), flush it to disk and rename it onto
    ``final``: ``final`` is either as it was or the whole new file. Whatever fails, the temporary file is
    removed and the error re-raised; after the rename the folder is flushed (best effort)."""
    temporary = final.with_name(f".{final.name}.tmp")
    try:
        write(temporary)
        sync_file(temporary)  # before the rename: a crash must not leave a renamed, empty file
        os.replace(temporary, final)
    except BaseException:  # a full disk: no half-written temporary file left behind
        temporary.unlink(missing_ok=True)
        raise
    sync_folder(final.parent)


def sync_file(path: Path) -> None:
    """Flush the file at ``path`` to disk.

    Raises:
        OSError: it cannot be opened or flushed.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened or flushed
    (Windows, some network file systems)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it is there, ignoring any failure (a leftover is harmless, a new error is not)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
