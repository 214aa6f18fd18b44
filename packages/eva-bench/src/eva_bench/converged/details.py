"""The converged page's section per task: its protocol, the tuning table (every seed-0 run's validation score and
the configuration each method ends with), and once the task is complete, the final runs' table (held-out cell,
seeds beating the majority-class baseline, steps to 95 % of LoRA's final validation value, the change over the
last quarter of the steps), the flattening check and the CPU time. Every number is read from run files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..paper.tables import display_name
from .protocol import KEY_SETTINGS, METHODS, SEEDS, TaskProtocol
from .results import TaskResults
from .selection import validation_score
from .statistics import Flattening, flattening, reach_target, steps_to_reach
from .tables import MISSING, baseline_cell, bound, decimals, held_out_summary, number, progress, summary_cell

__all__ = ["best_method", "final_table", "flattening_check", "lora_target", "task_section", "tuning_table"]


def _setting(setting: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> str:
    pairs = setting.items() if isinstance(setting, Mapping) else setting
    return ", ".join(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}" for name, value in pairs)


def _score(protocol: TaskProtocol, run: Mapping[str, Any]) -> str:
    """The run's validation score (mean validation metric over the last quarter of the steps) in its own sign."""
    if run.get("diverged"):
        return "diverged"
    score = validation_score(protocol, run)
    return number(score if protocol.higher_is_better else -score, decimals(protocol))


def _chosen(task: TaskResults, method: str) -> str:
    keys, grid = task.final.get(method), task.protocol.lr_grid
    if not keys:
        tried = sum(1 for key in task.tuning_runs(method) if not key.setting and key.lr in grid)
        after = ", a rate beyond its edge or the key setting next" if tried == len(grid) else ""
        return f"tuning ({tried} of {len(grid)} learning rates of the grid run{after})"
    key = keys[0]
    rates = {k.lr for k in task.tuning_runs(method) if not k.setting}
    edge = {min(rates): " **(lowest rate tried)**", max(rates): " **(highest rate tried)**"}.get(key.lr, "")
    return f"lr {key.lr:g}{edge}, {_setting(key.setting) or 'default setting'}"


BEYOND = "beyond the edge"


def _column(protocol: TaskProtocol, lr: float, setting: Sequence[tuple[str, Any]]) -> str:
    """The tuning table's column of a seed-0 run: its learning rate in the grid, the rate beyond the grid's edge,
    or its key setting (tried at the best rate)."""
    if setting:
        return f"{_setting(setting)} (best lr)"
    return f"lr {lr:g}" if lr in protocol.lr_grid else BEYOND


def tuning_table(task: TaskResults) -> str:
    """Markdown: a row per method, the validation score of its seed-0 run at each learning rate of the grid, at the
    rate beyond the grid's edge (run when the grid's best rate is an edge; the cell names the rate) and with each
    alternative key setting (at its best learning rate), the chosen configuration in bold."""
    protocol = task.protocol
    alternatives = [tuple(sorted(s.items())) for settings in KEY_SETTINGS.values() for s in settings]
    columns = [_column(protocol, lr, ()) for lr in protocol.lr_grid] + [BEYOND]
    columns += list(dict.fromkeys(_column(protocol, 0, setting) for setting in alternatives))
    lines = ["| " + " | ".join(["Method", *columns, "chosen"]) + " |", "|---" * (len(columns) + 2) + "|"]
    for method in METHODS:
        chosen = task.final.get(method, [None])[0]
        runs = {_column(protocol, key.lr, key.setting): key for key in task.tuning_runs(method)}
        row = [display_name(method)]
        for column in columns:
            key = runs.get(column)
            text = MISSING if key is None else _score(protocol, task.runs[key])
            text = f"**{text}**" if key is not None and key == chosen else text
            row.append(f"lr {key.lr:g}: {text}" if key is not None and column == BEYOND else text)
        lines.append("| " + " | ".join([*row, _chosen(task, method)]) + " |")
    return "\n".join(lines) + "\n"


def lora_target(task: TaskResults) -> tuple[float, float] | None:
    """LoRA's final mean validation value and the value that counts as reaching 95 % of it, ``None`` without LoRA
    records."""
    steps, values = task.mean_curve("lora")
    if not steps:
        return None
    return values[-1], reach_target(values[-1], task.protocol.higher_is_better)


def best_method(task: TaskResults) -> str | None:
    """The method with the best mean final validation value (last evaluation; the earlier method on a tie)."""
    finals = {m: values[-1] for m in METHODS if (values := task.mean_curve(m)[1])}
    if not finals:
        return None
    sign = 1.0 if task.protocol.higher_is_better else -1.0
    return max(finals, key=lambda m: (sign * finals[m], -METHODS.index(m)))


def flattening_check(task: TaskResults, method: str) -> Flattening | None:
    """The change of ``method``'s mean validation curve over the last quarter of the steps, ``None`` without runs."""
    steps, curves = task.curves(method)
    return flattening(steps, curves, task.protocol.steps, task.protocol.flat_threshold) if steps else None


def final_table(task: TaskResults, baseline: float | None) -> str:
    """Markdown: per method the held-out cell, seeds beating ``baseline`` (the majority class's held-out metric,
    ``—`` without one), the final mean validation value, the steps to reach 95 % of LoRA's and the change over
    the last quarter of the steps, and the means of the other held-out metrics the runs recorded."""
    places, target = decimals(task.protocol), lora_target(task)
    head = ["Method", "held-out (mean ± 95 % CI)", "seeds > majority class", "final validation (mean)"]
    head += ["steps to 95 % of LoRA", "last-quarter change", "other held-out metrics (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for method in METHODS:
        summary, (steps, values) = held_out_summary(task, method), task.mean_curve(method)
        check = flattening_check(task, method)
        reached = steps_to_reach(steps, values, target[1], task.protocol.higher_is_better) if target else None
        cells = [
            display_name(method),
            summary_cell(summary, places),
            baseline_cell(task, method, baseline),
            number(values[-1], places) if values else MISSING,
            MISSING if not steps or target is None else (f"{reached}" if reached is not None else "not reached"),
            MISSING if check is None else number(check.change, places, signed=True),
            "; ".join(f"{name} {value:.3f}" for name, value in task.other_held_out(method).items()) or MISSING,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _notes(task: TaskResults, baseline: float | None) -> list[str]:
    """The sentences under the final table: the 95 % target, the flattening check, the baseline."""
    protocol, places = task.protocol, decimals(task.protocol)
    notes = []
    target = lora_target(task)
    if target:
        rule = "0.95 \u00d7" if protocol.higher_is_better else "1 / 0.95 \u00d7"  # a multiplication sign
        notes.append(
            f"Steps to 95 % of LoRA: the first evaluated step whose mean validation {protocol.metric} reaches "
            f"{rule} LoRA's final mean ({number(target[0], places)}) = {number(target[1], places)}."
        )
    best = best_method(task)
    check = flattening_check(task, best) if best else None
    if best and check:
        verdict = "pass (flattened)" if check.flat else "FAIL (still moving)"
        notes.append(
            f"Flattening check: the best method by mean final validation {protocol.metric}, {display_name(best)}, "
            f"changed by {number(check.change, places, signed=True)}{_spread(check, places)} from step "
            f"{check.start_step} to step {check.end_step}; threshold ±{number(check.threshold, places)}: {verdict}."
        )
    if baseline is not None:
        notes.append(
            f"Majority-class baseline (held-out {protocol.metric} of always predicting that class): "
            f"{number(baseline, places)}."
        )
    return notes


def _spread(check: Flattening, places: int) -> str:
    """`` (95 % interval over the n seeds' changes [low, high])``, empty for a single seed."""
    changes = check.changes
    if changes.low is None or changes.high is None:
        return ""
    ends = f"[{bound(changes.low, places)}, {bound(changes.high, places)}]"
    return f" (95 % interval over the {changes.n} seeds' changes {ends})"


def task_section(task: TaskResults, baseline: float | None, figure: str | None) -> str:
    """The markdown section of one task (``figure``: the file name of its curves, when drawn)."""
    protocol = task.protocol
    settings = "".join(f", {name}={value}" for name, value in sorted(protocol.finetune.items()))
    direction = "higher" if protocol.higher_is_better else "lower"
    lines = [
        f"### {protocol.label}\n",
        f"{protocol.domain}, model `{protocol.model}`, held-out {protocol.metric} ({direction} is better); "
        f"{protocol.steps} steps, validation every {protocol.eval_every}; learning rates "
        f"{', '.join(f'{lr:g}' for lr in protocol.lr_grid)}; {len(SEEDS)} seeds{settings}.\n",
        f"Status: {progress(task)}.\n",
        "Tuning (seed 0; validation score = mean validation metric over the last quarter of the steps):\n",
        tuning_table(task),
    ]
    if task.complete:
        lines += ["Final runs (the chosen configuration, every seed):\n", final_table(task, baseline)]
        lines += [f"- {note}" for note in _notes(task, baseline)]
        lines.append("")
    cpu, wall = task.cpu_seconds() / 3600, task.wall_seconds() / 3600
    lines.append(f"CPU time: {cpu:.2f} CPU-hours over {len(task.runs)} cached runs ({wall:.2f} h wall).")
    if task.stale:
        lines.append(f"{task.stale} run files made under other settings are ignored.")
    if figure:
        lines.append(f"\n![{protocol.label}: mean validation curves]({figure})")
    return "\n".join(lines) + "\n"
