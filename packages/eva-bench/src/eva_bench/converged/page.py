"""The converged report's page: ``<out>/README.md`` and ``<out>/curves_<task>.png``, a pure function of the run
files under the cache (no clock, no machine state: dates and versions are those the runs recorded).

The README leads with one held-out table per domain (the models, and so the trainable parameters, differ
between domains; an average is only taken over tasks of one domain and one direction), then EVA vs every method
per task, a verdict paragraph per domain generated from those comparisons, a section per task (tuning, final
runs, flattening check, CPU time), the cost, the commands that regenerate it, and the closing note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..paper.tables import display_name
from .details import lora_target, task_section
from .plots import curves_png
from .protocol import KEY_SETTINGS, METHODS, PROTOCOLS, SEEDS, TaskProtocol
from .results import TaskResults, load_results
from .statistics import BOOTSTRAP_SEED, EXACT_UP_TO, RESAMPLES
from .tables import domain_table, domain_verdict, task_sentences, verdict_counts

__all__ = ["render", "summary"]

_DOMAINS = {"vision": "Vision", "rl": "RL", "nlu": "NLU", "llm": "LLM"}
_SCRIPT = "python benchmarks/converged.py"


def _by_domain(tasks: Sequence[TaskResults]) -> dict[str, list[TaskResults]]:
    domains: dict[str, list[TaskResults]] = {}
    for task in tasks:
        domains.setdefault(_DOMAINS.get(task.protocol.domain, task.protocol.domain), []).append(task)
    return domains


def _intro(tasks: Sequence[TaskResults]) -> list[str]:
    methods = ", ".join(display_name(m) for m in METHODS)
    settings = "; ".join(
        f"{display_name(m)}: " + ", ".join(f"{k}={v}" for s in alts for k, v in s.items())
        for m, alts in KEY_SETTINGS.items()
    )
    runs = [run for task in tasks for run in task.runs.values()]

    def distinct(field: str) -> str:
        return ", ".join(sorted({str(run.get(field, "?")) for run in runs})) or "none"

    made = (
        f"{len(runs)} runs cached, made on {distinct('date')} with torch {distinct('torch')}, Python "
        f"{distinct('python')}, {distinct('threads')} thread(s) per run."
        if runs
        else "No runs cached yet."
    )
    return [
        "# Converged comparison: does EVA pay off?\n",
        f"{methods} on {len(tasks)} tasks. Each method is tuned on a validation split carved from the task's "
        "training data: seed 0 runs at every learning rate of the task's grid, the best by validation score "
        "(the mean validation metric over the last quarter of the steps) is kept, and when it is an edge of the "
        "grid, one rate beyond that edge is tried too (a step as wide as the neighbouring one; the better of the "
        f"two is kept), then the method's key setting "
        f"is tried at that rate ({settings}); seeds {', '.join(map(str, SEEDS[1:]))} then run the chosen "
        f"configuration, and with seed {SEEDS[0]}'s run of it make the {len(SEEDS)} final runs, paired (seed s "
        "draws the same data order for every method). The held-out split is scored once, after the last step, and "
        "only for the tables below.\n",
        made + "\n",
    ]


def _statistics_note() -> str:
    return (
        "Per task, the mean over seeds of (EVA \u2212 method) on the held-out headline metric, negated where lower is "
        "better, so **positive = EVA better**; the 95 % interval is a paired-bootstrap percentile interval "
        f"(up to {EXACT_UP_TO} pairs every resample of the seeds with replacement, 5^5 = 3,125 for 5 seeds, so the "
        f"interval is exact; beyond, {RESAMPLES:,} resamples from generator seed {BOOTSTRAP_SEED}); the verdict is "
        "**win** when it excludes 0 on EVA's side, **loss** when it excludes 0 on the other side, **tie** when it "
        "contains 0. With 5 pairs the bootstrap interval is narrow (it ignores the uncertainty of the spread), so the "
        "exact two-sided Wilcoxon signed-rank p stands beside it: with 5 pairs it cannot go below 0.0625 "
        "(2/32), so no single task is significant at the 5 % level by Wilcoxon.\n\n"
        "Steps to 95 % of LoRA: the first evaluated step at which a method's validation metric, averaged over its "
        "final seeds, reaches 0.95 \u00d7 LoRA's final mean (for a loss: falls to LoRA's final mean / 0.95). "
        "Flattening check: it passes when the best method by final mean validation metric changes by less than "
        "the task's threshold between the last evaluation at or before 3/4 of the steps and the last one; the "
        "95 % Student-t interval of the seeds' changes beside it says how far the check's verdict is from noise.\n"
    )


def _cost(tasks: Sequence[TaskResults]) -> list[str]:
    lines = ["## Cost\n", "| Task | cached runs | CPU-hours | wall-hours (summed over runs) |", "|---|---|---|---|"]
    for task in tasks:
        lines.append(
            f"| {task.protocol.label} | {len(task.runs)} | {task.cpu_seconds() / 3600:.2f} | "
            f"{task.wall_seconds() / 3600:.2f} |"
        )
    cpu, wall = sum(t.cpu_seconds() for t in tasks) / 3600, sum(t.wall_seconds() for t in tasks) / 3600
    lines.append(f"| **Total** | {sum(len(t.runs) for t in tasks)} | {cpu:.2f} | {wall:.2f} |")
    return [*lines, ""]


def _regenerate(tasks: Sequence[TaskResults]) -> list[str]:
    missing = [t.protocol.name for t in tasks if not t.complete]
    rerun = (
        f"{_SCRIPT} --tasks {' '.join(missing)}   # run what these tasks still need (resumes), then render"
        if missing
        else f"{_SCRIPT}   # every final run is cached: runs nothing, renders"
    )
    return [
        "## Regenerate\n",
        "From the repository root, with the run files in `docs/results/converged/runs/`:\n",
        "```",
        f"{_SCRIPT} --render-only   # this page and its figures from the cache, running nothing",
        f"{_SCRIPT} --plan          # what is cached and what is due",
        rerun,
        "```\n",
    ]


def _closing(tasks: Sequence[TaskResults]) -> list[str]:
    cpu = sum(t.cpu_seconds() for t in tasks) / 3600
    lines = ["## Closing note\n", f"CPU-hours spent on the cached runs: {cpu:.2f}. Verdict per domain:\n"]
    for domain, members in _by_domain(tasks).items():
        done = [t for t in members if t.complete]
        if not done:
            lines.append(f"- {domain}: no verdict yet.")
            continue
        counts = verdict_counts(done)
        labels = ", ".join(t.protocol.label for t in done)
        lines.append(
            f"- {domain} ({labels}): EVA wins {counts['win']}, ties {counts['tie']}, loses {counts['loss']} "
            f"of {sum(counts.values())} comparisons."
        )
    return [*lines, ""]


def _held_out(tasks: Sequence[TaskResults], baselines: Mapping[str, float]) -> list[str]:
    lines = [
        "## Held-out results\n",
        "Held-out headline metric of the final runs: mean ± half-width of the 95 % Student-t interval over the "
        "seeds; n: seeds that did not diverge; ↑ higher / ↓ lower is better; bold: the best mean of a column; "
        "> majority class: seeds whose held-out score beats always predicting the majority class (tasks with a "
        "baseline); Avg: the mean of a domain's task means; trainable parameters: mean over the final runs, per "
        "task.\n",
    ]
    for domain, members in _by_domain(tasks).items():
        lines += [f"### {domain}\n", domain_table(members, baselines)]
    return lines


def _verdicts(tasks: Sequence[TaskResults]) -> list[str]:
    return ["## Verdict per domain\n"] + [
        domain_verdict(domain, members) + "\n" for domain, members in _by_domain(tasks).items()
    ]


def _markdown(tasks: Sequence[TaskResults], baselines: Mapping[str, float], figures: Mapping[str, str]) -> str:
    lines = [*_intro(tasks), *_held_out(tasks, baselines)]
    lines += ["## EVA vs each method\n", _statistics_note()]
    lines += [f"- {sentence}" for task in tasks for sentence in task_sentences(task)]
    lines += ["", *_verdicts(tasks), "## Tasks\n"]
    lines += [task_section(t, baselines.get(t.protocol.name), figures.get(t.protocol.name)) for t in tasks]
    return "\n".join([*lines, *_cost(tasks), *_regenerate(tasks), *_closing(tasks)]).rstrip("\n") + "\n"


def render(
    cache: Path,
    out: Path,
    baselines: Mapping[str, float] | None = None,
    protocols: Sequence[TaskProtocol] = PROTOCOLS,
) -> list[Path]:
    """Write ``<out>/README.md`` and a ``curves_<task>.png`` per task with final runs, from the run files under
    ``cache``; returns the paths written.

    Args:
        cache: the run files (``<cache>/<task>/<run>.json``); absent or empty renders every task as in progress.
        out: the report's folder (created when absent).
        baselines: per task name, the held-out headline metric of always predicting the majority class (the
            page counts the seeds above it; ``—`` for tasks without one).
        protocols: the tasks, in page order (default: the converged report's).
    """
    out.mkdir(parents=True, exist_ok=True)
    tasks = [load_results(cache, protocol) for protocol in protocols]
    figures: dict[str, str] = {}
    written: list[Path] = []
    for task in tasks:
        target = lora_target(task) if task.complete else None
        path = curves_png(task, None if target is None else target[1], out / f"curves_{task.protocol.name}.png")
        if path is not None:
            figures[task.protocol.name] = path.name
            written.append(path)
    readme = out / "README.md"
    readme.write_text(_markdown(tasks, baselines or {}, figures), encoding="utf-8")
    return [readme, *written]


def summary(cache: Path, baselines: Mapping[str, float], protocols: Sequence[TaskProtocol] = PROTOCOLS) -> str:
    """The held-out tables and the verdict per domain of the page, one heading level down: what the results
    index leads with."""
    tasks = [load_results(cache, protocol) for protocol in protocols]
    lines = [f"#{line}" if line.startswith("#") else line for line in [*_held_out(tasks, baselines), *_verdicts(tasks)]]
    return "\n".join(lines).rstrip("\n")
