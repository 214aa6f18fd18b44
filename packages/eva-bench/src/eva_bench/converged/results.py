"""One task's converged runs as read from the cache: which are final, which seeds diverged, the held-out values,
the mean validation curves and what the runs cost. Everything here is read from run files."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cache import RunKey, cached_runs
from .protocol import METHODS, SEEDS, TaskProtocol
from .selection import chosen, tuning

__all__ = ["TaskResults", "load_results"]


@dataclass(frozen=True)
class TaskResults:
    """The cached runs of one task.

    Attributes:
        protocol: the task's protocol (runs made under other settings are not in ``runs``).
        runs: every cached run made under ``protocol``, by key (tuning runs included).
        final: per method whose tuning is done, its final runs' keys in seed order (cached or not).
        stale: how many run files of the task were made under other settings (ignored).
    """

    protocol: TaskProtocol
    runs: Mapping[RunKey, Mapping[str, Any]]
    final: Mapping[str, Sequence[RunKey]]
    stale: int = 0

    @property
    def expected_final(self) -> int:
        """Final runs the task needs: every method x every seed."""
        return len(METHODS) * len(SEEDS)

    @property
    def cached_final(self) -> int:
        """Final runs already cached (diverged ones included)."""
        return sum(key in self.runs for keys in self.final.values() for key in keys)

    @property
    def complete(self) -> bool:
        """Every method tuned and all its final runs cached: the task gets numbers and verdicts."""
        return self.cached_final == self.expected_final

    def records(self, method: str) -> dict[int, Mapping[str, Any]]:
        """``method``'s cached final run records that did not diverge, by seed."""
        keys = self.final.get(method, ())
        return {key.seed: self.runs[key]["record"] for key in keys if "record" in self.runs.get(key, {})}

    def diverged(self, method: str) -> list[int]:
        """The seeds of ``method``'s cached final runs that diverged."""
        return [key.seed for key in self.final.get(method, ()) if self.runs.get(key, {}).get("diverged")]

    def held_out(self, method: str) -> dict[int, float]:
        """The held-out headline metric of each of ``method``'s final records, by seed."""
        return {seed: float(r["held_out"][self.protocol.metric]) for seed, r in self.records(method).items()}

    def other_held_out(self, method: str) -> dict[str, float]:
        """The mean over ``method``'s final records of each held-out metric besides the headline one (GSM8K's
        ``exact_match`` beside its ``loss``), by name in sorted order."""
        values: dict[str, list[float]] = {}
        for record in self.records(method).values():
            for name, value in record["held_out"].items():
                if name != self.protocol.metric:
                    values.setdefault(name, []).append(float(value))
        return {name: statistics.fmean(values[name]) for name in sorted(values)}

    def curves(self, method: str) -> tuple[list[int], list[list[float]]]:
        """The evaluated steps (E,) and the validation headline metric of each of ``method``'s final records at
        each, in seed order (seeds, E); both empty without records.

        Raises:
            ValueError: two records were evaluated at different steps.
        """
        records = [record for _, record in sorted(self.records(method).items())]
        if not records:
            return [], []
        steps = [int(point["step"]) for point in records[0]["curve"]]
        values = []
        for record in records:
            if [int(point["step"]) for point in record["curve"]] != steps:
                raise ValueError(f"{self.protocol.name}/{method}: runs were evaluated at different steps.")
            values.append([float(point["metrics"][self.protocol.metric]) for point in record["curve"]])
        return steps, values

    def mean_curve(self, method: str) -> tuple[list[int], list[float]]:
        """The evaluated steps (E,) and the validation headline metric at each, mean over ``method``'s final
        records (E,); both empty without records.

        Raises:
            ValueError: two records were evaluated at different steps.
        """
        steps, values = self.curves(method)
        return steps, [statistics.fmean(column) for column in zip(*values, strict=True)]

    def trainable_parameters(self, method: str) -> float | None:
        """Mean trainable parameters of ``method``'s final records, ``None`` without records."""
        counts = [float(r["trainable_parameters"]) for r in self.records(method).values()]
        return statistics.fmean(counts) if counts else None

    def cpu_seconds(self) -> float:
        """CPU seconds of every cached run of the task (tuning, final and diverged runs)."""
        return sum(float(run.get("cpu_seconds", 0.0)) for run in self.runs.values())

    def wall_seconds(self) -> float:
        """Wall seconds of every cached run of the task."""
        return sum(float(run.get("wall_seconds", 0.0)) for run in self.runs.values())

    def tuning_runs(self, method: str) -> dict[RunKey, Mapping[str, Any]]:
        """``method``'s cached seed-0 runs on its tuning path (the grid, the rate beyond its edge, the key settings
        at the best rate), in stage order. A seed-0 run off the path (a key setting left at another rate) is not
        among them."""
        return {key: self.runs[key] for key in tuning(self.protocol, method, self.runs).path if key in self.runs}


def load_results(cache: Path, protocol: TaskProtocol) -> TaskResults:
    """The task's runs under ``cache`` (an absent folder gives no runs)."""
    runs, stale = cached_runs(cache, protocol)
    return TaskResults(protocol, runs, chosen(protocol, runs), len(stale))
