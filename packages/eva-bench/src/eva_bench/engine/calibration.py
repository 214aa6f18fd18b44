"""Scoring the stopping benchmark: each method's subspace error against the pool reference, how well the
new rule's estimated error predicts the measured one, and the markdown tables of both.

Errors are :func:`~eva_bench.engine.reference.subspace_error` (the mean squared sine of the principal
angles, the quantity ``EvaConfig.target_error`` bounds): per layer, at ``k = rank`` (the top-r measured
components, the same k for every method) and at the layer's allocated rank (what its adapter gets; layers
allocated 0 are left out), then averaged over layers.
"""

from __future__ import annotations

import statistics
from typing import Any

from .reference import PoolReference, subspace_error

__all__ = ["calibration_table", "noise_row", "pool_table", "results_table", "score_run"]


def score_run(run: dict[str, Any], reference: PoolReference, rank: int) -> dict[str, Any]:
    """Per-layer errors of one method's ``run`` and their summary.

    Returns:
        ``run``'s summary fields, ``error_r`` / ``error_alloc`` (means over layers), ``error_alloc_max``,
        and ``per_layer``: name -> ``{"rank", "error_r", "error_alloc", "estimated"}`` (``estimated`` only
        for the new rule).
    """
    estimated = run.get("estimated") or {}
    per_layer: dict[str, dict[str, Any]] = {}
    for name, layer in run["layers"].items():
        ref = reference.vectors[reference.leader_of[name]]
        components, allocated = layer["components"], layer["rank"]
        row: dict[str, Any] = {"rank": allocated}
        if len(components) >= rank:
            row["error_r"] = subspace_error(components[:rank], ref)
        if allocated > 0:
            row["error_alloc"] = subspace_error(components[:allocated], ref)
        if name in estimated:
            row["estimated"] = float(estimated[name])
        per_layer[name] = row
    at_r = [row["error_r"] for row in per_layer.values() if "error_r" in row]
    at_alloc = [row["error_alloc"] for row in per_layer.values() if "error_alloc" in row]
    summary = {key: run[key] for key in ("method", "batches", "wall", "cpu", "converged", "capped", "target_error")}
    summary.update(
        layers=len(per_layer),
        error_r=_mean(at_r),
        error_alloc=_mean(at_alloc),
        error_alloc_max=max(at_alloc, default=float("nan")),
        per_layer=per_layer,
    )
    if estimated and run.get("target_error") is not None:
        summary["calibration"] = _calibration(per_layer, float(run["target_error"]))
    return summary


def _calibration(per_layer: dict[str, dict[str, Any]], target: float) -> dict[str, Any]:
    """Measured vs estimated error at the allocated rank, over the layers with both."""
    pairs = [
        (row["error_alloc"], row["estimated"]) for row in per_layer.values() if {"error_alloc", "estimated"} <= set(row)
    ]
    ratios = sorted(measured / estimated for measured, estimated in pairs if estimated > 0)
    n = len(pairs)
    return {
        "target": target,
        "layers": n,
        "ratio_median": statistics.median(ratios) if ratios else float("nan"),
        "ratio_p90": _quantile(ratios, 0.9),
        "over_target": sum(measured > target for measured, _ in pairs) / n if n else float("nan"),
        "over_estimate": sum(measured > estimated for measured, estimated in pairs) / n if n else float("nan"),
        "estimated_mean": _mean([estimated for _, estimated in pairs]),
        "measured_mean": _mean([measured for measured, _ in pairs]),
    }


def noise_row(reference: PoolReference, ranks: dict[str, int], rank: int) -> dict[str, float]:
    """The pool's own noise: the mean error between the even and the odd halves' subspaces, at ``k = rank``
    and at the allocated ``ranks`` (layer -> rank; 0 left out). Errors of independent halves add up
    roughly, each half holds half the rows, and a subspace's error falls about as 1/rows: the whole pool's
    error against the population is then about a quarter of the split-half error."""
    at_r, at_alloc = [], []
    for name, leader in reference.leader_of.items():
        even, odd = reference.halves[leader]
        at_r.append(subspace_error(even[:rank], odd))
        if ranks.get(name, 0) > 0:
            at_alloc.append(subspace_error(even[: ranks[name]], odd))
    return {"split_half_r": _mean(at_r), "split_half_alloc": _mean(at_alloc)}


def results_table(records: list[dict[str, Any]]) -> str:
    """Batches, time and error of every method on every model."""
    head = (
        "model", "method", "batches", "wall s", "CPU s", "converged", "error at r",
        "error at allocated rank (mean / max)", "wall / peft",
    )  # fmt: skip
    lines = []
    for record in records:
        peft = next((s for s in record["summaries"] if s["method"] == "peft"), None)
        for s in record["summaries"]:
            ratio = f"{s['wall'] / peft['wall']:.2f}" if peft else "-"
            converged = f"{s['converged']}/{s['layers']}" + (" (cap)" if s["capped"] else "")
            lines.append(
                f"| {record['name']} | {s['label']} | {s['batches']} | {s['wall']:.1f} | {s['cpu']:.1f} | "
                f"{converged} | {s['error_r']:.4f} | {s['error_alloc']:.4f} / {s['error_alloc_max']:.3f} | {ratio} |"
            )
        for label, why in record.get("skipped", {}).items():
            lines.append(f"| {record['name']} | {label} | skipped: {why} | | | | | | |")
    return _markdown(head, lines)


def calibration_table(records: list[dict[str, Any]]) -> str:
    """Per model and new-rule run: the estimated against the measured error at the allocated rank."""
    head = (
        "model", "run", "target", "layers", "measured / estimated (median, p90)", "measured > target",
        "measured > estimated", "mean estimated", "mean measured",
    )  # fmt: skip
    lines = []
    for record in records:
        for s in record["summaries"]:
            c = s.get("calibration")
            if c:
                lines.append(
                    f"| {record['name']} | {s['label']} | {c['target']:g} | {c['layers']} | {c['ratio_median']:.2f}, "
                    f"{c['ratio_p90']:.2f} | {c['over_target']:.1%} | {c['over_estimate']:.1%} | "
                    f"{c['estimated_mean']:.4f} | {c['measured_mean']:.4f} |"
                )
    return _markdown(head, lines)


def pool_table(records: list[dict[str, Any]]) -> str:
    """Per model: fit and pool sizes, the rows check and the pool's own noise."""
    head = (
        "model", "layers", "fit cap (batches)", "pool batches", "pool rows per layer", "rows check",
        "split-half error at r", "at allocated rank",
    )  # fmt: skip
    lines = []
    for r in records:
        lines.append(
            f"| {r['name']} | {r['layers']} | {r['cap']} | {r['pool']} | {r['pool_rows'][0]}-{r['pool_rows'][1]} | "
            f"{r['rows_check']} | {r['noise']['split_half_r']:.4f} | {r['noise']['split_half_alloc']:.4f} |"
        )
    return _markdown(head, lines)


def _markdown(head: tuple[str, ...], rows: list[str]) -> str:
    """A markdown table: the header cells, the separator, then the rendered ``rows``."""
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _quantile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``ordered`` (linear interpolation), NaN when empty."""
    if not ordered:
        return float("nan")
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
