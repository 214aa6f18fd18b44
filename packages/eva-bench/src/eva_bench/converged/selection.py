"""Which converged runs a task needs next, and which configuration each method ends with.

The order per (task, method): seed 0 at every learning rate of the grid (stage 1); when the best of them is at an
edge of the grid, seed 0 at one rate beyond that edge, a step as wide as the neighbouring one (stage 1b: a rate
at the edge is a bound, not an optimum, and data-driven inits often want a smaller one than LoRA); seed 0 at
the best rate with each alternative key setting (stage 2); seeds 1-4 at the best configuration (stage 3). "Best" is
the validation score, the mean headline metric over the evaluations in the last quarter of the steps; a run
that diverged (its loss became NaN) scores worst. Held-out metrics play no part here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .cache import RunKey
from .protocol import KEY_SETTINGS, METHODS, SEEDS, TaskProtocol

__all__ = ["Tuning", "beyond_edge", "chosen", "needed_runs", "tuning", "validation_score"]

Runs = Mapping[RunKey, Mapping[str, Any]]


def validation_score(protocol: TaskProtocol, run: Mapping[str, Any]) -> float:
    """The run's mean validation metric over its last quarter of steps, signed so that higher is better
    (``-inf`` for a diverged run)."""
    if run.get("diverged"):
        return -math.inf
    late = [p["metrics"][protocol.metric] for p in run["record"]["curve"] if 4 * p["step"] >= 3 * protocol.steps]
    value = statistics.fmean(late)
    return value if protocol.higher_is_better else -value


def _best(protocol: TaskProtocol, runs: Runs, keys: list[RunKey]) -> RunKey | None:
    """The best of ``keys`` by validation score (the earlier key on a tie); ``None`` until all are cached."""
    if not keys or any(key not in runs for key in keys):
        return None
    return max(keys, key=lambda key: (validation_score(protocol, runs[key]), -keys.index(key)))


def beyond_edge(protocol: TaskProtocol, lr: float) -> float | None:
    """The rate one step beyond the grid's edge ``lr`` (the step's ratio is that of the edge and its neighbour),
    to 2 significant digits; ``None`` for a rate inside the grid.

    Example: grid (5e-4, 1.5e-3, 4e-3): 5e-4 -> 1.7e-4, 4e-3 -> 1.1e-2, 1.5e-3 -> None.
    """
    grid = sorted(protocol.lr_grid)
    if lr == grid[0]:
        return float(f"{grid[0] ** 2 / grid[1]:.2g}")
    if lr == grid[-1]:
        return float(f"{grid[-1] ** 2 / grid[-2]:.2g}")
    return None


@dataclass(frozen=True)
class Tuning:
    """Where one method's tuning stands.

    Attributes:
        path: the seed-0 keys of its tuning so far, in stage order: the grid, the rate beyond its edge (when the
            grid's best is an edge) and the key settings at the best rate; those not yet cached included.
        due: the runs of the first unfinished stage that are not cached (the final seeds once tuning is done).
        best: the chosen seed-0 run, ``None`` while tuning.
    """

    path: list[RunKey]
    due: list[RunKey]
    best: RunKey | None


def tuning(protocol: TaskProtocol, method: str, runs: Runs) -> Tuning:
    """Where ``method``'s tuning on ``protocol``'s task stands, given the cached ``runs``."""
    path = [RunKey.of(protocol.name, method, lr, SEEDS[0]) for lr in protocol.lr_grid]
    best_lr = _best(protocol, runs, path)
    if best_lr is None:
        return Tuning(path, _missing(path, runs), None)
    beyond = beyond_edge(protocol, best_lr.lr)
    if beyond is not None:
        step = RunKey.of(protocol.name, method, beyond, SEEDS[0])
        path.append(step)
        best_lr = _best(protocol, runs, [best_lr, step])  # a tie keeps the grid's rate
        if best_lr is None:
            return Tuning(path, [step], None)
    settings = [RunKey.of(protocol.name, method, best_lr.lr, SEEDS[0], s) for s in KEY_SETTINGS.get(method, ())]
    path += settings
    best = _best(protocol, runs, [best_lr, *settings])
    if best is None:
        return Tuning(path, _missing(settings, runs), None)
    return Tuning(path, _missing(_seeds_of(best), runs), best)


def _missing(keys: list[RunKey], runs: Runs) -> list[RunKey]:
    return [key for key in keys if key not in runs]


def _seeds_of(key: RunKey) -> list[RunKey]:
    return [RunKey(key.task, key.method, key.lr, seed, key.setting) for seed in SEEDS]


def needed_runs(protocol: TaskProtocol, runs: Runs) -> list[RunKey]:
    """The runs that can start now (their stage's prerequisites are cached), method by method."""
    return [key for method in METHODS for key in tuning(protocol, method, runs).due]


def chosen(protocol: TaskProtocol, runs: Runs) -> dict[str, list[RunKey]]:
    """Per method whose tuning is done, its final runs' keys (the chosen configuration, every seed), in
    seed order; a method still tuning is absent."""
    final = {}
    for method in METHODS:
        best = tuning(protocol, method, runs).best
        if best is not None:
            final[method] = _seeds_of(best)
    return final
