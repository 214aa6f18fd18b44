"""The converged page's result tables and sentences, generated from the runs: one held-out table per domain,
the EVA-vs-method sentences of each task and the verdict paragraph of each domain.

A task gets numbers only once it is complete (every method tuned and its five final runs cached); until then
its cells read ``—`` and a line under the table says how many final runs are cached.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..paper.tables import display_name
from .protocol import METHODS, TaskProtocol
from .results import TaskResults
from .statistics import Comparison, Summary, mean_interval, paired_comparison

__all__ = [
    "FOCUS",
    "MISSING",
    "baseline_cell",
    "bound",
    "comparisons",
    "decimals",
    "domain_table",
    "domain_verdict",
    "held_out_summary",
    "number",
    "progress",
    "summary_cell",
    "task_sentences",
    "verdict_counts",
]

FOCUS = "eva"
MISSING = "—"
_MINUS = "\u2212"


def decimals(protocol: TaskProtocol) -> int:
    """Decimals shown for the task's metric: one finer than its flattening threshold (0.01 -> 3, 3.0 -> 1)."""
    return max(0, 1 - math.floor(math.log10(protocol.flat_threshold)))


def number(value: float, places: int, signed: bool = False) -> str:
    """``value`` with ``places`` decimals, a true minus sign, and ``+`` for positives when ``signed``."""
    text = f"{value:+.{places}f}" if signed else f"{value:.{places}f}"
    return text.replace("-", _MINUS)


def bound(value: float, places: int) -> str:
    """An interval end, signed, with more decimals than ``places`` where ``places`` would round a nonzero end to
    zero (a win whose interval starts at ``+0.000`` would read as touching zero); up to 3 more."""
    for extra in range(4):
        text = number(value, places + extra, True)
        if value == 0 or text.strip("+" + _MINUS).strip("0.") != "":
            return text
    return text


def progress(task: TaskResults) -> str:
    """``in progress: k of n final runs cached`` (or ``complete: n final runs``)."""
    if task.complete:
        return f"complete: {task.expected_final} final runs"
    return f"in progress: {task.cached_final} of {task.expected_final} final runs cached"


def held_out_summary(task: TaskResults, method: str) -> Summary | None:
    """Mean and 95 % t interval of ``method``'s held-out headline metric over its final seeds (``None`` until the
    task is complete or when every seed diverged)."""
    values = list(task.held_out(method).values())
    return mean_interval(values) if task.complete and values else None


def summary_cell(summary: Summary | None, places: int) -> str:
    """``mean ± half-width`` (``mean`` alone for one seed, ``—`` for none) with ``places`` decimals."""
    if summary is None:
        return MISSING
    half = summary.half_width
    return number(summary.mean, places) + ("" if half is None else f" ± {number(half, places)}")


def _seeds_cell(task: TaskResults, method: str) -> str:
    if not task.complete:
        return MISSING
    diverged = task.diverged(method)
    return f"{len(task.held_out(method))}" + (f" ({len(diverged)} diverged)" if diverged else "")


def _parameters(task: TaskResults, method: str) -> str:
    count = task.trainable_parameters(method) if task.complete else None
    return MISSING if count is None else f"{round(count):,}"


def _averages(tasks: Sequence[TaskResults]) -> dict[str, float]:
    """Per method, the mean of its per-task held-out means, when the domain has several tasks, all complete and
    of one direction."""
    if len(tasks) < 2 or len({t.protocol.higher_is_better for t in tasks}) != 1 or not all(t.complete for t in tasks):
        return {}
    summaries = {m: [held_out_summary(t, m) for t in tasks] for m in METHODS}
    return {m: sum(s.mean for s in cells if s) / len(cells) for m, cells in summaries.items() if all(cells)}


def _best(means: Mapping[str, float], higher_is_better: bool) -> set[str]:
    if not means:
        return set()
    best = max(means.values()) if higher_is_better else min(means.values())
    return {m for m, v in means.items() if v == best}


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def baseline_cell(task: TaskResults, method: str, baseline: float | None) -> str:
    """``k of n``: how many of ``method``'s final seeds score better than ``baseline`` on the held-out split (the
    majority class's score); ``—`` without a baseline or before the task is complete."""
    values = task.held_out(method).values()
    if baseline is None or not task.complete:
        return MISSING
    beat = sum((v > baseline) if task.protocol.higher_is_better else (v < baseline) for v in values)
    return f"{beat} of {len(values)}"


def domain_table(tasks: Sequence[TaskResults], baselines: Mapping[str, float] | None = None) -> str:
    """Markdown: a row per method (``METHODS`` order); per task the held-out headline ``mean ± half-width`` of the
    95 % t interval, the seeds behind it and, for a task in ``baselines`` (task name -> the majority class's
    held-out score), how many seeds beat it; then ``Avg`` (mean of the task means; only for several complete tasks
    of one direction) and the mean trainable parameters per task. Bold: the best mean of a column."""
    baselines = baselines or {}
    arrows = [" ↑" if t.protocol.higher_is_better else " ↓" for t in tasks]
    head = ["Method"]
    for task, arrow in zip(tasks, arrows, strict=True):
        head += [f"{task.protocol.label} {task.protocol.metric}{arrow}", "n"]
        head += ["> majority class"] if task.protocol.name in baselines else []
    averages = _averages(tasks)
    if averages:
        head.append(f"Avg{arrows[0]}")
    head.append(f"Trainable params ({' / '.join(t.protocol.label for t in tasks)})")
    summaries = [{m: held_out_summary(t, m) for m in METHODS} for t in tasks]
    bests = [
        _best({m: s.mean for m, s in column.items() if s}, t.protocol.higher_is_better)
        for t, column in zip(tasks, summaries, strict=True)
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method in METHODS:
        cells = [display_name(method)]
        for task, column, best in zip(tasks, summaries, bests, strict=True):
            cells += [
                _bold(summary_cell(column[method], decimals(task.protocol)), method in best),
                _seeds_cell(task, method),
            ]
            if task.protocol.name in baselines:
                cells.append(baseline_cell(task, method, baselines[task.protocol.name]))
        if averages:
            best_average = method in _best(averages, tasks[0].protocol.higher_is_better)
            text = number(averages[method], decimals(tasks[0].protocol)) if method in averages else MISSING
            cells.append(_bold(text, best_average))
        cells.append(" / ".join(_parameters(t, method) for t in tasks))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {t.protocol.label}: {progress(t)}; no numbers until it is complete." for t in tasks if not t.complete]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def comparisons(task: TaskResults) -> dict[str, Comparison]:
    """EVA vs every other method on the seeds where both have a held-out value (empty until the task is
    complete; a method without a common seed is absent)."""
    if not task.complete:
        return {}
    eva = task.held_out(FOCUS)
    result = {}
    for method in METHODS:
        other = task.held_out(method)
        seeds = [seed for seed in eva if seed in other]
        if method != FOCUS and seeds:
            result[method] = paired_comparison(
                [eva[s] for s in seeds], [other[s] for s in seeds], task.protocol.higher_is_better
            )
    return result


def _sentence(task: TaskResults, method: str, comparison: Comparison) -> str:
    places = decimals(task.protocol)
    low, high = bound(comparison.low, places), bound(comparison.high, places)
    pairs = "" if comparison.n == 5 else f" ({comparison.n} paired seeds)"
    verdict = comparison.verdict or "too few pairs for a verdict"
    return (
        f"EVA vs {display_name(method)} on {task.protocol.label}: {number(comparison.difference, places, True)} "
        f"[{low}, {high}], Wilcoxon p = {comparison.p_value:.3g}{pairs}: {verdict}."
    )


def task_sentences(task: TaskResults) -> list[str]:
    """One sentence per method (EVA's paired difference, interval, Wilcoxon p, verdict), or the task's progress."""
    found = comparisons(task)
    if not task.complete:
        return [f"{task.protocol.label}: {progress(task)}; no verdict yet."]
    if not found:
        return [f"{task.protocol.label}: EVA has no final run that did not diverge; no verdict."]
    return [_sentence(task, method, comparison) for method, comparison in found.items()]


def _names(methods: Sequence[str]) -> str:
    return ", ".join(display_name(m) for m in methods) or "none"


def _parameter_clause(tasks: Sequence[TaskResults]) -> str:
    """`` Trainable parameters per run, EVA vs LoRA: N vs M (x %) on T; ...`` over the tasks with both counts."""
    parts = []
    for task in tasks:
        eva, lora = task.trainable_parameters(FOCUS), task.trainable_parameters("lora")
        if eva is not None and lora:
            parts.append(f"{round(eva):,} vs {round(lora):,} ({100 * eva / lora:.0f} %) on {task.protocol.label}")
    return f" Trainable parameters per run, EVA vs LoRA: {'; '.join(parts)}." if parts else ""


def verdict_counts(tasks: Sequence[TaskResults]) -> dict[str, int]:
    """How many of EVA's comparisons on the complete ``tasks`` are a win, a tie and a loss."""
    found = [c.verdict for t in tasks for c in comparisons(t).values()]
    return {name: found.count(name) for name in ("win", "tie", "loss")}


def _task_clause(task: TaskResults) -> str:
    found = comparisons(task)
    by_verdict = {v: [m for m, c in found.items() if c.verdict == v] for v in ("win", "tie", "loss")}
    means = {m: s.mean for m in METHODS if (s := held_out_summary(task, m))}
    best = _names(sorted(_best(means, task.protocol.higher_is_better), key=METHODS.index))
    return (
        f"on {task.protocol.label} EVA wins against {_names(by_verdict['win'])}, ties with "
        f"{_names(by_verdict['tie'])} and loses to {_names(by_verdict['loss'])} (best held-out mean: {best})"
    )


def domain_verdict(domain: str, tasks: Sequence[TaskResults]) -> str:
    """The domain's verdict paragraph, every claim counted from the comparisons of its complete tasks."""
    done = [t for t in tasks if t.complete]
    waiting = "; ".join(f"{t.protocol.label} {progress(t)}" for t in tasks if not t.complete)
    if not done:
        return f"**{domain}**: no verdict yet ({waiting})."
    counts = verdict_counts(done)
    total = sum(counts.values())
    text = (
        f"**{domain}**: of {total} paired comparisons EVA wins {counts['win']}, ties {counts['tie']} and loses "
        f"{counts['loss']} at 95 % confidence (paired bootstrap); " + "; ".join(map(_task_clause, done)) + "."
    )
    if counts["win"] < total:
        text += f" EVA does not win {total - counts['win']} of the {total} comparisons."
    text += _parameter_clause(done)
    return text + (f" Not yet decided: {waiting}." if waiting else "")
