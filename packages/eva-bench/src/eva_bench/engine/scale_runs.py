"""One measurement of the scale benchmark (:mod:`eva_bench.engine.scale`): a method on a subject, timed, with
its peak memory and the bytes its statistics held.

- ``forward``: plain forward passes under ``torch.no_grad``, timed batch by batch;
- ``exact``, ``sketch``, ``auto``: ``eva_core.fit`` with ``EvaConfig.statistics`` set so (on an eva-core
  without that field: ``gram_memory_bytes`` 64 GiB for ``exact`` and 0, which forces the sketch, for
  ``sketch``), ``min_steps = max_steps =`` the batch count so that every layer measures every batch;
- ``peft``: peft's EVA (:func:`eva_bench.engine.peft_eva.peft_fit`) with ``tau = 1``, stopped after the
  same batches (plus its first, hashing pass).

Statistic bytes are measured, not computed: every ``update`` of eva-core's statistic classes is wrapped to
record the bytes of the tensors the object holds afterwards, and a method's figure is the sum over its
statistics of each one's largest record (peft: the tensors its ``IncrementalPCA`` objects hold at the end).
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .peft_eva import peft_fit, tensor_bytes

__all__ = [
    "FIT_METHODS",
    "RANK",
    "RHO",
    "StatisticBytes",
    "peak_memory",
    "run_method",
    "statistics_fields",
]

FIT_METHODS = ("exact", "sketch", "auto")
RANK, RHO = 16, 2.0
"""EVA's default rank and the issue's rho: each layer may take up to 32 components."""
EXACT_BYTES = 64 * 1024**3
"""``gram_memory_bytes`` for the exact method: enough for every layer here."""


def statistics_fields(mode: str) -> dict[str, Any]:
    """The ``EvaConfig`` fields selecting the statistics ``mode`` (``exact``, ``sketch`` or ``auto``)."""
    from eva_core import EvaConfig

    if "statistics" not in {field.name for field in dataclasses.fields(EvaConfig)}:
        if mode == "auto":
            return {}
        return {"gram_memory_bytes": EXACT_BYTES if mode == "exact" else 0}
    return {"statistics": mode, **({"gram_memory_bytes": EXACT_BYTES} if mode == "exact" else {})}


class StatisticBytes:
    """While entered, records per eva-core statistic object its kind and the most bytes it held after an
    ``update``, and the seconds spent reading components (``top``: the solves at the checks)."""

    def __init__(self) -> None:
        self.peak: dict[int, int] = {}
        self.kind: dict[int, str] = {}
        self.solve_seconds = 0.0

    @contextlib.contextmanager
    def recording(self) -> Iterator[StatisticBytes]:
        from eva_core import svd

        classes = [
            getattr(svd, n) for n in ("GramStatistics", "SketchStatistics", "CountStatistics") if hasattr(svd, n)
        ]
        originals = {cls: (cls.update, cls.top) for cls in classes}

        def update(cls: type) -> Any:
            def wrapped(stats: Any, *args: Any, **kwargs: Any) -> None:
                originals[cls][0](stats, *args, **kwargs)
                key = id(stats)
                self.peak[key] = max(self.peak.get(key, 0), tensor_bytes(stats))
                self.kind[key] = cls.__name__.removesuffix("Statistics").lower()

            return wrapped

        def top(cls: type) -> Any:
            def wrapped(stats: Any, *args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return originals[cls][1](stats, *args, **kwargs)
                finally:
                    self.solve_seconds += time.perf_counter() - started

            return wrapped

        for cls in classes:
            cls.update, cls.top = update(cls), top(cls)
        try:
            yield self
        finally:
            for cls, (original_update, original_top) in originals.items():
                cls.update, cls.top = original_update, original_top

    def total(self) -> int:
        return sum(self.peak.values())

    def kinds(self) -> dict[str, int]:
        """How many statistic objects of each kind (``gram``, ``sketch``, ``count``)."""
        counts: dict[str, int] = {}
        for kind in self.kind.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def peak_memory(device: str) -> int:
    """Bytes: the process's peak resident set (CPU; Linux reports KiB) or ``torch.cuda.max_memory_allocated``."""
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_method(
    method: str, model: torch.nn.Module, batches: list[Any], targets: str | None, device: str, check_every: int = 1
) -> dict[str, Any]:
    """Run ``method`` on ``model`` over every batch of ``batches``; wall and CPU seconds, statistic bytes,
    and for a fit its layers' components (per measured input)."""
    stats = StatisticBytes()
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    with stats.recording():
        if method == "forward":
            result = _forward(model, batches, device)
        elif method == "peft":
            result = peft_fit(model, batches, targets or "", rank=RANK, rho=RHO, tau=1.0, cap=len(batches))
        else:
            result = _fit(model, batches, targets, method, check_every)
    _sync(device)
    result.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, peak=peak_memory(device))
    if method in FIT_METHODS:
        result.update(statistic_bytes=stats.total(), kinds=stats.kinds(), solve=stats.solve_seconds)
    return result


def _forward(model: torch.nn.Module, batches: list[Any], device: str) -> dict[str, Any]:
    walls, cpus = [], []
    with torch.no_grad():
        for batch in batches:
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            model(**batch) if isinstance(batch, dict) else model(batch)
            _sync(device)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    return {"batches": len(batches), "wall_per_batch": walls, "cpu_per_batch": cpus, "statistic_bytes": 0}


def _fit(model: torch.nn.Module, batches: list[Any], targets: str | None, mode: str, check_every: int) -> dict:
    import eva_core

    n = len(batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotConvergedWarning: every batch is measured on purpose
        state = eva_core.fit(
            model, batches, rank=RANK, rho=RHO, tau=1.0, target_modules=targets, progress=False, max_steps=n,
            min_steps=n, check_every=min(check_every, n), **statistics_fields(mode),
        )  # fmt: skip
    layers = {
        layer.source: {
            "components": layer.components.detach().double().cpu(),
            "variance": layer.explained_variance.detach().double().cpu(),
            "rows": layer.rows,
        }
        for layer in state.layers.values()
    }
    return {"batches": state.steps, "layers": layers}
