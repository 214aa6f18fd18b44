"""The paper-style markdown of ``benchmarks/report.py``: per-task statistics, the method x task table, the
sentence saying where EVA ranks, one page per domain and the index of the pages.

A task is one cached ``compare.py`` store (``{"meta": ..., "runs": {"<method>/seed<N>": run}}``); a run's
headline value is its metric at the last point of its curve.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DISPLAY_NAMES",
    "FOCUS",
    "TaskRuns",
    "average_means",
    "beating_majority",
    "best_methods",
    "display_name",
    "domain_page",
    "domain_table",
    "final_values",
    "format_cell",
    "index_line",
    "lower_is_better",
    "ordinal",
    "ranking_sentence",
    "task_means",
]

DISPLAY_NAMES: dict[str, str] = {
    "lora": "LoRA",
    "dora": "DoRA",
    "adalora": "AdaLoRA",
    "pissa": "PiSSA",
    "milora": "MiLoRA",
    "olora": "OLoRA",
    "loraga": "LoRA-GA",
    "corda": "CorDA",
    "eva": "EVA",
    "eva_dora": "EVA+DoRA",
    "eva_rho1": "EVA (ρ=1)",  # noqa: RUF001 - the paper's rho
    "eva_whiten": "EVA whitened",
}
FOCUS = "eva"  # the method whose rank the pages state
_LOWER_IS_BETTER = frozenset({"loss", "action_mse"})
_MISSING = "—"


@dataclass(frozen=True)
class TaskRuns:
    """One task's cached runs: ``label`` (its column), ``stem`` (its file stem), the store's ``meta`` and
    ``runs`` (``"<method>/seed<N>" -> run``); both empty when nothing is cached. ``majority``: the headline
    metric of always predicting the majority class of the held-out rows the runs were scored on
    (classification tasks; ``None`` elsewhere)."""

    label: str
    stem: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    runs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    majority: float | None = None

    def chosen(self, methods: Sequence[str], seeds: Sequence[int]) -> list[Mapping[str, Any]]:
        """The runs of ``methods`` x ``seeds`` that are cached, method-major."""
        return [self.runs[k] for m in methods for s in seeds if (k := f"{m}/seed{s}") in self.runs]

    @property
    def metric(self) -> str | None:
        """The headline metric (of the first run), ``None`` without runs."""
        return next((str(run["metric"]) for run in self.runs.values()), None)


def lower_is_better(metric: str) -> bool:
    """Whether a smaller ``metric`` is better (``loss``, ``action_mse``); every other metric is higher-better."""
    return metric in _LOWER_IS_BETTER


def display_name(method: str) -> str:
    """The table name of ``method`` (``eva_dora`` -> ``EVA+DoRA``); unknown methods as they are."""
    return DISPLAY_NAMES.get(method, method)


def ordinal(n: int) -> str:
    """``1 -> "1st"``, ``2 -> "2nd"``, ``11 -> "11th"``, ``23 -> "23rd"``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def final_values(task: TaskRuns, method: str, seeds: Sequence[int]) -> list[float]:
    """The headline metric at the last curve point of each cached seed of ``method``."""
    return [float(run["curve"][-1]["metrics"][run["metric"]]) for run in task.chosen([method], seeds)]


def task_means(task: TaskRuns, methods: Sequence[str], seeds: Sequence[int]) -> dict[str, float]:
    """Mean final value over seeds for each method with at least one cached run (in ``methods`` order)."""
    values = {m: final_values(task, m, seeds) for m in methods}
    return {m: statistics.mean(v) for m, v in values.items() if v}


def average_means(tasks: Sequence[TaskRuns], methods: Sequence[str], seeds: Sequence[int]) -> dict[str, float]:
    """Mean over tasks of each method's per-task mean (as GLUE averages accuracy and F1); only methods present
    on every task, and nothing when a task has no runs or the tasks disagree on whether lower is better."""
    metrics = [t.metric for t in tasks]
    if not metrics or None in metrics or len({lower_is_better(m or "") for m in metrics}) != 1:
        return {}
    per_task = [task_means(t, methods, seeds) for t in tasks]
    return {m: statistics.mean(means[m] for means in per_task) for m in methods if all(m in p for p in per_task)}


def best_methods(means: Mapping[str, float], lower: bool) -> set[str]:
    """The methods whose mean is the best (several on an exact tie); empty for no means."""
    if not means:
        return set()
    best = min(means.values()) if lower else max(means.values())
    return {m for m, v in means.items() if v == best}


def format_cell(values: Sequence[float], requested: int) -> str:
    """``mean ± std`` (sample std, 4 decimals) with ``(n=k)`` when fewer than ``requested`` seeds ran."""
    if not values:
        return _MISSING
    text = f"{statistics.mean(values):.4f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(values):.4f}"
    return text + (f" (n={len(values)})" if len(values) < requested else "")


def beating_majority(task: TaskRuns, method: str, seeds: Sequence[int]) -> str:
    """`` (k/n > majority)``: how many of ``method``'s cached seeds end strictly better than the task's
    majority-class baseline (empty when the task has none, or the method no runs)."""
    values = final_values(task, method, seeds)
    if task.majority is None or not values:
        return ""
    lower, baseline = lower_is_better(task.metric or ""), task.majority
    beats = sum(v < baseline - 1e-9 if lower else v > baseline + 1e-9 for v in values)
    return f" ({beats}/{len(values)} > majority)"


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text != _MISSING else text


def _arrow(metric: str | None) -> str:
    return "" if metric is None else (" ↓" if lower_is_better(metric) else " ↑")


def _method_costs(tasks: Sequence[TaskRuns], method: str, seeds: Sequence[int]) -> list[str]:
    """Trainable parameters (first task with runs), init seconds and init peak MiB (means over tasks)."""
    per_task = [runs for t in tasks if (runs := t.chosen([method], seeds))]
    if not per_task:
        return [_MISSING] * 3
    params = f"{round(statistics.mean(r['trainable_parameters'] for r in per_task[0])):,}"
    init_s = statistics.mean(statistics.mean(float(r["init_seconds"]) for r in runs) for runs in per_task)
    peaks = [[r["init_peak_bytes"] / 2**20 for r in runs if r.get("init_peak_bytes") is not None] for runs in per_task]
    known = [statistics.mean(p) for p in peaks if p]
    return [params, f"{init_s:.2f}", f"{statistics.mean(known):.1f}" if known else _MISSING]


def domain_table(tasks: Sequence[TaskRuns], methods: Sequence[str], seeds: Sequence[int]) -> str:
    """Markdown: a row per method; per task its final headline ``mean ± std``, then ``Avg``, trainable
    parameters, init seconds and init peak MiB; the best mean of each metric column in bold."""
    metrics = [t.metric for t in tasks]
    means = [task_means(t, methods, seeds) for t in tasks]
    bests = [best_methods(m, lower_is_better(metric or "")) for m, metric in zip(means, metrics, strict=True)]
    average = average_means(tasks, methods, seeds)
    best_average = best_methods(average, lower_is_better(metrics[0] or "")) if average else set()
    head = [
        "method",
        *[f"{t.label} {t.metric or ''}{_arrow(t.metric)}".strip() for t in tasks],
        f"Avg{_arrow(metrics[0])}",
    ]
    head += ["trainable params", "init s", "init peak MiB"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method in methods:
        cells = [display_name(method)]
        for task, best in zip(tasks, bests, strict=True):
            cell = _bold(format_cell(final_values(task, method, seeds), len(seeds)), method in best)
            cells.append(cell + beating_majority(task, method, seeds))
        cells.append(_bold(f"{average[method]:.4f}", method in best_average) if method in average else "")
        lines.append("| " + " | ".join(cells + _method_costs(tasks, method, seeds)) + " |")
    return "\n".join(lines) + "\n"


def ranking_sentence(label: str, means: Mapping[str, float], lower: bool, focus: str = FOCUS) -> str:
    """Where ``focus`` ranks among the methods with runs, by mean (``lower`` = smaller is better), and who is
    best; a tie for first is called a tie, never a win."""
    name = display_name(focus)
    if not means:
        return f"No runs on {label} yet."
    ordered = sorted(means, key=lambda m: means[m], reverse=not lower)
    if focus not in means:
        best = ordered[0]
        return f"{name} has no runs on {label}; best: {display_name(best)} {means[best]:.4f}."
    mine = means[focus]
    better, tied = _standing(focus, means, lower)
    if len(means) == 1:
        return f"{name} is the only method with runs on {label} ({mine:.4f})."
    if not better and tied:
        others = ", ".join(display_name(m) for m in tied)
        return f"{name} ties for 1st of {len(means)} on {label} with {others} ({mine:.4f})."
    if not better:
        second = ordered[1]
        runner_up = f"{display_name(second)} {means[second]:.4f}"
        return f"{name} ranks 1st of {len(means)} on {label} (runner-up: {runner_up} vs {name} {mine:.4f})."
    best, place = ordered[0], ordinal(len(better) + 1) + (" (tied)" if tied else "")
    leader = f"{display_name(best)} {means[best]:.4f}"
    return f"{name} ranks {place} of {len(means)} on {label} (best: {leader} vs {name} {mine:.4f})."


def _standing(method: str, means: Mapping[str, float], lower: bool) -> tuple[list[str], list[str]]:
    """The methods strictly better than ``method`` and those tied with it."""
    mine = means[method]
    better = [m for m in means if (means[m] < mine if lower else means[m] > mine)]
    return better, [m for m in means if m != method and means[m] == mine]


def _run_line(tasks: Sequence[TaskRuns], methods: Sequence[str], seeds: Sequence[int]) -> str:
    """Dates, torch versions and threads of the stores, and the runs' total wall and CPU minutes."""
    metas = [t.meta for t in tasks if t.meta]
    runs = [r for t in tasks for r in t.chosen(methods, seeds)]

    def distinct(key: str) -> str:
        return ", ".join(sorted({str(m.get(key, "?")) for m in metas})) or "?"

    wall = sum(float(r.get("run_wall_seconds", 0.0)) for r in runs) / 60
    cpu = sum(float(r.get("run_cpu_seconds", 0.0)) for r in runs) / 60
    return (
        f"Runs of {distinct('date')}; torch {distinct('torch')}, {distinct('threads')} thread(s) per run, "
        f"Python {distinct('python')} on {distinct('machine')}. {len(runs)} of "
        f"{len(tasks) * len(methods) * len(seeds)} runs cached, {wall:.1f} min wall, {cpu:.1f} min CPU in total.\n"
    )


def domain_page(
    domain: str,
    tasks: Sequence[TaskRuns],
    methods: Sequence[str],
    seeds: Sequence[int],
    command: str,
    figures: Mapping[str, Sequence[tuple[str, str | None]]],
    notes: Sequence[str] = (),
) -> str:
    """The markdown page of one domain.

    Args:
        domain: the domain's name (``nlu``), the page title.
        tasks: one per column, in column order.
        methods, seeds: what was requested (rows; seeds counted for ``n``).
        command: the shell command that regenerates the page.
        figures: per task stem, ``(caption, file name or None)`` pairs; ``None`` names a figure that could
            not be drawn and the caption says why.
        notes: lines added below the ranking sentences (e.g. a task left out).

    Returns:
        The page, ending in a newline.
    """
    labels = ", ".join(t.label for t in tasks)
    lines = [f"# {domain}: LoRA initializations compared on {labels}\n", f"Regenerate: `{command}`\n"]
    lines += [_run_line(tasks, methods, seeds), domain_table(tasks, methods, seeds)]
    lines.append(
        f"Final held-out metric, mean ± std over seeds {', '.join(map(str, seeds))} (n = seeds that ran, when fewer); "
        "↑ higher / ↓ lower is better; bold: best mean of the column. Avg: mean of the per-task means.\n"
    )
    lines += _majority_note(tasks)
    for task in tasks:
        metric = task.metric
        means = task_means(task, methods, seeds)
        lines.append(
            "- " + ranking_sentence(f"{task.label} {metric or ''}".strip(), means, lower_is_better(metric or ""))
        )
    average = average_means(tasks, methods, seeds)
    if len(tasks) > 1 and average:
        lines.append("- " + ranking_sentence("the task average", average, lower_is_better(tasks[0].metric or "")))
    lines += [f"- {note}" for note in notes]
    lines.append("\n## Figures\n")
    for task in tasks:
        links = [f"[{caption}]({name})" if name else caption for caption, name in figures.get(task.stem, [])]
        lines.append(f"- {task.label} ([runs]({task.stem}.json)): " + "; ".join(links))
    return "\n".join(lines) + "\n"


def _majority_note(tasks: Sequence[TaskRuns]) -> list[str]:
    """The sentence defining "k/n > majority" and each task's baseline, when a task has one."""
    known = [f"{t.label} {t.metric} {t.majority:.4f}" for t in tasks if t.majority is not None]
    if not known:
        return []
    return [
        "k/n > majority: of the n seeds, the k whose final metric beats always predicting the majority class of "
        f"the held-out rows the runs were scored on ({'; '.join(known)}); a seed at the baseline learned nothing "
        "usable about the inputs.\n"
    ]


def index_line(domain: str, tasks: Sequence[TaskRuns], methods: Sequence[str], seeds: Sequence[int]) -> str:
    """One markdown bullet of the index: the domain page, its tasks, EVA's Avg and the best method's."""
    average = average_means(tasks, methods, seeds)
    head = f"- [{domain}]({domain}.md): {', '.join(t.label for t in tasks)}"
    if not average:
        return head + " — no average yet (a task without runs, or metrics of opposite directions)."
    metric = "/".join(dict.fromkeys(t.metric or "" for t in tasks))
    lower = lower_is_better(tasks[0].metric or "")
    best = sorted(average, key=lambda m: average[m], reverse=not lower)[0]
    eva = f"{display_name(FOCUS)} —"
    if FOCUS in average:
        better, tied = _standing(FOCUS, average, lower)
        place = ordinal(len(better) + 1) + (" (tied)" if tied else "")
        eva = f"{display_name(FOCUS)} {average[FOCUS]:.4f} ({place} of {len(average)})"
    return f"{head} ({metric}{_arrow(tasks[0].metric)}): Avg {eva}; best {display_name(best)} {average[best]:.4f}."
