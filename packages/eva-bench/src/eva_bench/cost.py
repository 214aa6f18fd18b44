"""What a block of work cost: wall time, CPU time and peak memory, measured around it.

Peak memory is the high-water mark *above* what was in use when the block started:

- on CUDA (when ``device`` is a CUDA device): ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``, minus the memory allocated at the start;
- on the CPU under Linux: the process's peak resident set (``VmHWM``), reset at the start by writing ``5``
  to ``/proc/self/clear_refs``, minus the resident set at the start. It counts every allocation of the
  process (Python objects, the allocator's cache), so it is an upper bound on the block's own tensors;
- elsewhere: ``None`` (unknown), never a guess.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Cost", "measure_cost"]

_log = logging.getLogger(__name__)
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass
class Cost:
    """Filled in when the ``with measure_cost()`` block ends.

    Attributes:
        seconds: wall time.
        cpu_seconds: CPU time of this process (all its threads).
        peak_bytes: memory high-water mark above the start, or ``None`` where it cannot be measured.
    """

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_bytes: int | None = None


@contextmanager
def measure_cost(device: torch.device | str | None = None) -> Iterator[Cost]:
    """Measure the block: ``with measure_cost() as cost: ...``; read ``cost`` after the block.

    Args:
        device: where the block's tensors live; a CUDA device measures CUDA memory, anything else the
            process's resident memory.
    """
    cost = Cost()
    on_cuda = device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available()
    start_bytes = _start_cuda(device) if on_cuda else _start_resident()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield cost
    finally:
        cost.seconds = time.perf_counter() - wall
        cost.cpu_seconds = time.process_time() - cpu
        peak = torch.cuda.max_memory_allocated(device) if on_cuda else _status_bytes("VmHWM")
        cost.peak_bytes = None if start_bytes is None or peak is None else max(0, peak - start_bytes)


def _start_cuda(device: torch.device | str | None) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return int(torch.cuda.memory_allocated(device))


def _start_resident() -> int | None:
    """The resident set now, after resetting the peak to it; ``None`` where the kernel offers neither."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError as error:  # not Linux, or /proc not writable: the peak would be the process's lifetime peak
        _log.debug("cannot reset the peak resident set (%s); peak memory not measured", error)
        return None
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` field (reported in kB) in bytes."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None
