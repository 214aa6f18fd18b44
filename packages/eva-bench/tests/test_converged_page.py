"""The converged page from a hand-made cache (the report's tasks with their settings frozen here, fabricated run
files): the numbers it prints equal hand-computed ones, an incomplete task renders as in progress without a verdict,
an empty cache renders every task of the report, and two renders give the same bytes."""

# ruff: noqa: RUF001 - the page prints true minus and multiplication signs

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from eva_bench.converged.cache import RunKey, save_run
from eva_bench.converged.page import render
from eva_bench.converged.protocol import METHODS, PROTOCOLS, SEEDS, TaskProtocol
from eva_bench.converged.selection import beyond_edge
from eva_bench.converged.tables import bound

LOW, MID, HIGH = 5e-4, 1.5e-3, 4e-3
BELOW = 1.7e-4  # one step beyond LOW (5e-4 x 5e-4 / 1.5e-3, to 2 significant digits)


def _task(name: str, label: str, domain: str, metric: str, steps: int, every: int, **more: Any) -> TaskProtocol:
    more = {"lr_grid": (LOW, MID, HIGH), "flat_threshold": 0.01, **more}
    return TaskProtocol(name, label, domain, "model", metric, metric != "loss", steps=steps, eval_every=every, **more)


# The report's tasks with their settings frozen here, so retuning the real protocols leaves this test alone.
TASKS = {
    protocol.name: protocol
    for protocol in (
        _task("fmnist59", "F-MNIST 5-9", "vision", "accuracy", 200, 25),
        _task("digits", "Digits", "vision", "accuracy", 200, 25),
        _task("walker2d", "Walker2d", "rl", "normalized_return", 200, 50, flat_threshold=3.0),
        _task("sst2", "SST-2", "nlu", "accuracy", 160, 20),
        _task("mrpc", "MRPC", "nlu", "f1", 160, 20),
        _task("gsm8k", "GSM8K", "llm", "loss", 80, 20, lr_grid=(2e-4, 6e-4, 2e-3)),
    )
}
PAGE_TASKS = tuple(TASKS.values())
CPU_SECONDS = 36.0  # per run: 54 Digits runs (3 beyond an edge) = 0.54 CPU-hours, 11 SST-2 runs = 0.11

# Digits: the chosen configuration per method (LoRA at the grid's low edge, PiSSA at its high edge, both beating
# the rate beyond it; OLoRA beyond the low edge; EVA+DoRA with rho=1), its final validation value (mean over
# seeds; seed offsets below average to 0), the step where its ramp ends, a rise at the very last evaluation, and
# the held-out accuracy per seed.
EVA_HELD = [0.83, 0.84, 0.85, 0.86, 0.87]
DIGITS: dict[str, dict[str, Any]] = {
    "lora": {"lr": LOW, "val": 0.80, "ramp": 100, "held": [0.80, 0.81, 0.82, 0.83, 0.84]},  # EVA - 0.03: win
    "dora": {"lr": MID, "val": 0.81, "ramp": 100, "held": [0.82, 0.85, 0.83, 0.88, 0.87]},  # +-0.01, +-0.02, 0: tie
    "pissa": {"lr": HIGH, "val": 0.86, "ramp": 100, "late": 0.02, "held": [v + 0.01 for v in EVA_HELD]},  # loss
    "olora": {"lr": BELOW, "val": 0.78, "ramp": 100, "held": [0.82, 0.82, 0.82, 0.82, 0.82]},  # EVA - 0.01..0.05
    "loraga": {"lr": MID, "val": 0.74, "ramp": 100, "held": [v - 0.05 for v in EVA_HELD], "diverged": 2},
    "eva": {"lr": MID, "val": 0.84, "ramp": 50, "held": EVA_HELD},
    "eva_dora": {"lr": MID, "setting": {"rho": 1}, "val": 0.83, "ramp": 75, "held": [0.84, 0.82, 0.85, 0.87, 0.86]},
}
OFFSETS = [-0.01, 0.01, 0.0, -0.02, 0.02]  # validation offset per seed: mean 0, and 0 without seed 2
PARAMETERS = {"eva": [990, 1000, 990, 1000, 1000]}  # mean 996; every other run trains 1,000
BASELINES = {"digits": 0.835}  # seeds above: LoRA 0.84 only, EVA all but 0.83


def _curve(task: str, final: float, ramp: int, late: float) -> list[dict[str, Any]]:
    """A validation curve rising linearly to ``final`` at step ``ramp``, flat after, ``+ late`` at the last step."""
    protocol = TASKS[task]
    points = []
    for step in protocol.eval_at:
        value = final * min(1.0, step / ramp) + (late if step == protocol.steps else 0.0)
        points.append({"step": step, "metrics": {"loss": 1.0 - value, protocol.metric: value}})
    return points


def _run(task: str, method: str, seed: int, curve: list[dict[str, Any]], held: float, params: int) -> dict[str, Any]:
    record = {
        "method": method,
        "seed": seed,
        "metric": TASKS[task].metric,
        "init_seconds": 0.1,
        "train_seconds": 30.0,
        "trainable_parameters": params,
        "curve": curve,
        "extra": {},
        "init_peak_bytes": None,
        "held_out": {"loss": 2 * held, TASKS[task].metric: held},
    }
    return _costs({"record": record})


def _costs(run: dict[str, Any]) -> dict[str, Any]:
    extra = {"threads": 1, "python": "3.11.7", "torch": "2.14.1", "date": "2026-12-01"}
    return {**run, "cpu_seconds": CPU_SECONDS, "wall_seconds": 2 * CPU_SECONDS, **extra}


def _save(cache: Path, task: str, method: str, lr: float, seed: int, run: Mapping[str, Any], **setting: Any) -> None:
    save_run(cache, RunKey.of(task, method, lr, seed, setting), TASKS[task], run)


def _tuning_runs(cache: Path, task: str, method: str, spec: Mapping[str, Any], shift: float) -> None:
    """Seed 0 over the grid, one rate beyond its edge when the grid's best is an edge (a tie of the grid goes to
    its first rate), and rho=1 for EVA's variants: the chosen configuration scores best; the others reach 0.9 x
    its final value (0.95 x for the default setting of a method that chooses rho=1); LoRA diverges at the grid's
    top."""
    chosen_setting = spec.get("setting", {})
    final = spec["val"] + OFFSETS[0]
    grid = TASKS[task].lr_grid
    configs = [(lr, {}) for lr in grid]
    beyond = beyond_edge(TASKS[task], spec["lr"] if spec["lr"] in grid else grid[0])
    configs += [(beyond, {})] if beyond is not None else []
    configs += [(spec["lr"], {"rho": 1})] if method in ("eva", "eva_dora") else []
    for lr, setting in configs:
        chosen = (lr, setting) == (spec["lr"], chosen_setting)
        scale = 1.0 if chosen else 0.95 if (lr == spec["lr"] and chosen_setting) else 0.9
        if method == "lora" and lr == HIGH:
            _save(cache, task, method, lr, 0, _costs({"diverged": "loss is nan at step 40"}), **setting)
            continue
        curve = _curve(task, scale * final, spec["ramp"], spec.get("late", 0.0))
        run = _run(task, method, 0, curve, spec["held"][0] + shift, PARAMETERS.get(method, [1000] * 5)[0])
        _save(cache, task, method, lr, 0, run, **setting)


def _vision_task(cache: Path, task: str = "digits", shift: float = 0.0) -> None:
    """Every run of a vision task (``DIGITS``, held-out values + ``shift``): 7 x 3 grid runs, 2 rho=1 runs and
    7 x 4 final seeds (LoRA-GA's seed 2 diverged)."""
    for method, spec in DIGITS.items():
        _tuning_runs(cache, task, method, spec, shift)
        for seed in SEEDS[1:]:
            if spec.get("diverged") == seed:
                run = _costs({"diverged": "loss is nan at step 120"})
            else:
                curve = _curve(task, spec["val"] + OFFSETS[seed], spec["ramp"], spec.get("late", 0.0))
                params = PARAMETERS.get(method, [1000] * 5)[seed]
                run = _run(task, method, seed, curve, spec["held"][seed] + shift, params)
            _save(cache, task, method, spec["lr"], seed, run, **spec.get("setting", {}))


def _sst2_in_progress(cache: Path) -> None:
    """SST-2: LoRA tuned (best at the middle rate) with its five final runs, EVA's grid run (its rho=1 run is due
    next; one at the lowest rate, off its path, is left from an earlier grid and must not fill the column); no
    other method has run."""
    for method in ("lora", "eva"):
        for lr in TASKS["sst2"].lr_grid:
            run = _run("sst2", method, 0, _curve("sst2", 0.9 if lr == MID else 0.8, 40, 0), 0.9, 500)
            _save(cache, "sst2", method, lr, 0, run)
    _save(
        cache,
        "sst2",
        "eva",
        TASKS["sst2"].lr_grid[0],
        0,
        _run("sst2", "eva", 0, _curve("sst2", 0.7, 40, 0), 0.9, 500),
        rho=1,
    )
    for seed in SEEDS[1:]:
        _save(cache, "sst2", "lora", MID, seed, _run("sst2", "lora", seed, _curve("sst2", 0.9, 40, 0), 0.9, 500))


# GSM8K (loss, lower is better): per method its final validation loss (reached by a linear fall from 3.0 at step
# `ramp`) and its held-out loss minus EVA's on every seed; every method is best at the middle rate, default setting.
EVA_LOSS = [1.0, 1.1, 1.2, 1.3, 1.4]
GSM8K = {
    "lora": (1.60, 60, 0.1),
    "dora": (1.55, 60, 0.1),
    "pissa": (1.50, 40, -0.05),
    "olora": (1.70, 80, 0.2),
    "loraga": (1.65, 80, 0.15),
    "eva": (1.52, 20, 0.0),
    "eva_dora": (1.53, 40, 0.05),
}


def _falling(final: float, ramp: int) -> list[dict[str, Any]]:
    return [
        {"step": step, "metrics": {"loss": final + (3.0 - final) * max(0.0, 1 - step / ramp)}}
        for step in TASKS["gsm8k"].eval_at
    ]


def _loss_task(cache: Path) -> None:
    """Every GSM8K run: seed 0 at the grid's outer rates and with rho=1 ends 0.3 higher than at the middle rate."""
    low, mid, high = TASKS["gsm8k"].lr_grid
    for method, (final, ramp, gap) in GSM8K.items():
        configs = [(low, {}), (high, {}), *([(mid, {"rho": 1})] if method in ("eva", "eva_dora") else [])]
        for lr, setting in configs:
            _save(
                cache, "gsm8k", method, lr, 0, _run("gsm8k", method, 0, _falling(final + 0.3, ramp), 9.0, 10), **setting
            )
        for seed in SEEDS:
            run = _run("gsm8k", method, seed, _falling(final, ramp), EVA_LOSS[seed] + gap, 10)
            _save(cache, "gsm8k", method, mid, seed, run)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The cache and the README rendered from it."""
    root = tmp_path_factory.mktemp("converged")
    cache = root / "runs"
    _vision_task(cache)
    _sst2_in_progress(cache)
    render(cache, root / "out", BASELINES, protocols=PAGE_TASKS)
    return cache, (root / "out" / "README.md").read_text()


def _row(text: str, first_cell: str, after: str) -> str:
    """The first table row starting with ``| first_cell |`` after the line containing ``after``."""
    tail = text[text.index(after) :]
    return next(line for line in tail.splitlines() if line.startswith(f"| {first_cell} |"))


def test_the_held_out_table_has_hand_computed_cells(page: tuple[Path, str]) -> None:
    _, text = page
    # LoRA: mean 0.82, half-width t(0.975, 4) x sqrt(0.00025) / sqrt(5) = 0.0196; F-MNIST has no runs
    head = "| Method | F-MNIST 5-9 accuracy ↑ | n | Digits accuracy ↑ | n | > majority class | Trainable params"
    assert f"{head} (F-MNIST 5-9 / Digits) |" in text  # a baseline for Digits only
    assert _row(text, "LoRA", "### Vision") == "| LoRA | — | — | 0.820 ± 0.020 | 5 | 1 of 5 | — / 1,000 |"
    assert _row(text, "PiSSA", "### Vision") == "| PiSSA | — | — | **0.860 ± 0.020** | 5 | 5 of 5 | — / 1,000 |"
    assert _row(text, "EVA", "### Vision") == "| EVA | — | — | 0.850 ± 0.020 | 5 | 4 of 5 | — / 996 |"
    assert "| LoRA-GA | — | — | 0.800 ± 0.029 | 4 (1 diverged) | 0 of 4 | — / 1,000 |" in text  # 0.78, 0.79, 0.81, 0.82
    assert "- F-MNIST 5-9: in progress: 0 of 35 final runs cached; no numbers until it is complete." in text


def test_eva_vs_each_method_sentences(page: tuple[Path, str]) -> None:
    _, text = page
    assert "EVA vs LoRA on Digits: +0.030 [+0.030, +0.030], Wilcoxon p = 0.0625: win." in text
    assert "EVA vs PiSSA on Digits: −0.010 [−0.010, −0.010], Wilcoxon p = 0.0625: loss." in text
    assert "EVA vs LoRA-GA on Digits: +0.050 [+0.050, +0.050], Wilcoxon p = 0.125 (4 paired seeds): win." in text
    dora = next(line for line in text.splitlines() if "EVA vs DoRA on Digits" in line)
    assert dora.startswith("- EVA vs DoRA on Digits: +0.000 [−0.0") and dora.endswith("Wilcoxon p = 1: tie.")
    olora = next(line for line in text.splitlines() if "EVA vs OLoRA on Digits" in line)  # EVA + 0.01 .. 0.05
    assert olora.startswith("- EVA vs OLoRA on Digits: +0.030 [+0.0") and olora.endswith("p = 0.0625: win.")


def test_the_domain_verdict_is_counted(page: tuple[Path, str]) -> None:
    _, text = page
    vision = next(line for line in text.splitlines() if line.startswith("**Vision**"))
    assert "of 6 paired comparisons EVA wins 3, ties 2 and loses 1" in vision
    assert "on Digits EVA wins against LoRA, OLoRA, LoRA-GA, ties with DoRA, EVA+DoRA and loses to PiSSA" in vision
    assert "(best held-out mean: PiSSA)" in vision and "EVA does not win 3 of the 6 comparisons" in vision
    assert "EVA vs LoRA: 996 vs 1,000 (100 %) on Digits" in vision
    assert "Not yet decided: F-MNIST 5-9 in progress: 0 of 35 final runs cached." in vision
    assert "- Vision (Digits): EVA wins 3, ties 2, loses 1 of 6 comparisons." in text
    assert "**NLU**: no verdict yet (SST-2 in progress: 5 of 35 final runs cached;" in text


def test_the_tuning_table_and_the_chosen_configurations(page: tuple[Path, str]) -> None:
    _, text = page
    # LoRA seed 0: 0.80 - 0.01 at the low rate (chosen), 0.9 x 0.79 at the middle one, diverged at the top
    lora = _row(text, "LoRA", "### Digits")
    assert lora == "| LoRA | **0.790** | 0.711 | diverged | lr 0.00017: 0.711 | — | lr 0.0005, default setting |"
    olora = "| OLoRA | 0.693 | 0.693 | 0.693 | lr 0.00017: **0.770** | — | lr 0.00017 **(lowest rate tried)**, default"
    assert _row(text, "OLoRA", "### Digits") == olora + " setting |"
    assert _row(text, "PiSSA", "### Digits").endswith("| lr 0.004, default setting |")  # 0.011 tried and lost
    # EVA+DoRA: 0.95 x 0.82 with the default rho, 0.82 with rho=1 (chosen); PiSSA's last-step rise counts 1/3
    eva_dora = "| EVA+DoRA | 0.738 | 0.779 | 0.738 | — | **0.820** | lr 0.0015, rho=1 |"
    assert _row(text, "EVA+DoRA", "### Digits") == eva_dora
    assert _row(text, "PiSSA", "### Digits").startswith("| PiSSA | 0.772 | 0.772 | **0.857** | lr 0.011: 0.772 | — |")


def test_final_runs_steps_to_95_percent_baseline_and_flattening(page: tuple[Path, str]) -> None:
    _, text = page
    final = text.index("Final runs")
    # target 0.95 x 0.80 = 0.76: EVA's ramp (0.84 at step 50) gets there first, LoRA's (0.80 at 100) at 100;
    # EVA+DoRA's 0.83 x 50/75 = 0.55 at step 50, 0.83 at 75. The held-out loss is 2 x the accuracy here.
    assert _row(text, "EVA", "Final runs") == "| EVA | 0.850 ± 0.020 | 4 of 5 | 0.840 | 50 | +0.000 | loss 1.700 |"
    lora = "| LoRA | 0.820 ± 0.020 | 1 of 5 | 0.800 | 100 | +0.000 | loss 1.640 |"
    assert _row(text, "LoRA", "Final runs") == lora
    assert _row(text, "EVA+DoRA", "Final runs").endswith("| 0.830 | 75 | +0.000 | loss 1.696 |")
    assert _row(text, "LoRA-GA", "Final runs").endswith("| 0.740 | not reached | +0.000 | loss 1.600 |")
    assert "reaches 0.95 × LoRA's final mean (0.800) = 0.760." in text[final:]
    spread = "(95 % interval over the 5 seeds' changes [+0.020, +0.020])"  # every seed's curve has the same shape
    flat = f"PiSSA, changed by +0.020 {spread} from step 150 to step 200; threshold ±0.010: FAIL (still moving)."
    assert flat in text[final:]
    assert "CPU time: 0.54 CPU-hours over 54 cached runs (1.08 h wall)." in text


def test_an_incomplete_task_is_in_progress_with_its_tuning(page: tuple[Path, str]) -> None:
    _, text = page
    sst2 = text[text.index("### SST-2\n\n") : text.index("### MRPC\n\n")]
    assert "Status: in progress: 5 of 35 final runs cached." in sst2
    assert "| LoRA | 0.800 | **0.900** | 0.800 | — | — | lr 0.0015, default setting |" in sst2
    assert "| DoRA | — | — | — | — | — | tuning (0 of 3 learning rates of the grid run) |" in sst2
    due = "tuning (3 of 3 learning rates of the grid run, a rate beyond its edge or the key setting next)"
    assert f"| EVA | 0.800 | 0.900 | 0.800 | — | — | {due} |" in sst2
    assert "Final runs" not in sst2 and "EVA vs LoRA on SST-2" not in text
    assert "- SST-2: in progress: 5 of 35 final runs cached; no verdict yet." in text
    # every cached run costs, the one off its path too
    assert "| **Total** | 65 | 0.65 | 1.30 |" in text and "CPU-hours spent on the cached runs: 0.65." in text
    assert "python benchmarks/converged.py --tasks fmnist59 walker2d sst2 mrpc gsm8k" in text


def test_rendering_twice_gives_the_same_bytes(page: tuple[Path, str], tmp_path: Path) -> None:
    cache, text = page
    first = render(cache, tmp_path / "a", BASELINES, protocols=PAGE_TASKS)
    second = render(cache, tmp_path / "b", BASELINES, protocols=PAGE_TASKS)
    assert [p.name for p in first] == ["README.md", "curves_digits.png", "curves_sst2.png"]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second, strict=True))
    assert first[0].read_text() == text
    assert first[1].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_without_a_baseline_the_column_reads_a_dash(page: tuple[Path, str], tmp_path: Path) -> None:
    cache, _ = page
    text = render(cache, tmp_path, {}, protocols=PAGE_TASKS)[0].read_text()
    assert _row(text, "EVA", "Final runs") == "| EVA | 0.850 ± 0.020 | — | 0.840 | 50 | +0.000 | loss 1.700 |"
    assert "Majority-class baseline" not in text


def test_two_complete_tasks_of_a_domain_get_an_average_and_pooled_verdicts(tmp_path: Path) -> None:
    _vision_task(tmp_path / "runs")
    _vision_task(tmp_path / "runs", "fmnist59", shift=0.02)  # every held-out value 0.02 higher than on Digits
    text = render(tmp_path / "runs", tmp_path / "out", protocols=PAGE_TASKS)[0].read_text()
    head = "| Method | F-MNIST 5-9 accuracy ↑ | n | Digits accuracy ↑ | n | Avg ↑ | Trainable params"
    assert f"{head} (F-MNIST 5-9 / Digits) |" in text
    assert _row(text, "EVA", "### Vision") == "| EVA | 0.870 ± 0.020 | 5 | 0.850 ± 0.020 | 5 | 0.860 | 996 / 996 |"
    assert _row(text, "PiSSA", "### Vision").endswith("| **0.870** | 1,000 / 1,000 |")  # (0.88 + 0.86) / 2
    assert "**Vision**: of 12 paired comparisons EVA wins 6, ties 4 and loses 2" in text
    assert "- Vision (F-MNIST 5-9, Digits): EVA wins 6, ties 4, loses 2 of 12 comparisons." in text


def test_a_lower_is_better_task_is_oriented(tmp_path: Path) -> None:
    _loss_task(tmp_path / "runs")
    text = render(tmp_path / "runs", tmp_path / "out", protocols=PAGE_TASKS)[0].read_text()
    # EVA: mean 1.2, s = sqrt(0.025), half-width 2.776445 x 0.158114 / sqrt(5) = 0.196; PiSSA 0.05 lower: best
    assert _row(text, "EVA", "### LLM") == "| EVA | 1.200 ± 0.196 | 5 | 10 |"
    assert _row(text, "PiSSA", "### LLM") == "| PiSSA | **1.150 ± 0.196** | 5 | 10 |"
    assert "EVA vs LoRA on GSM8K: +0.100 [+0.100, +0.100], Wilcoxon p = 0.0625: win." in text
    assert "EVA vs PiSSA on GSM8K: −0.050 [−0.050, −0.050], Wilcoxon p = 0.0625: loss." in text
    assert "**LLM**: of 6 paired comparisons EVA wins 5, ties 0 and loses 1" in text
    # target 1.60 / 0.95 = 1.684: EVA is at 1.52 by step 20, LoRA at 1.60 by 60 (2.07 at 40), OLoRA ends at 1.70
    assert "reaches 1 / 0.95 × LoRA's final mean (1.600) = 1.684." in text
    assert _row(text, "EVA", "Final runs").startswith("| EVA | 1.200 ± 0.196 | — | 1.520 | 20 | +0.000 |")
    assert _row(text, "LoRA", "Final runs").startswith("| LoRA | 1.300 ± 0.196 | — | 1.600 | 60 | +0.000 |")
    assert "| 1.700 | not reached |" in _row(text, "OLoRA", "Final runs")
    spread = "(95 % interval over the 5 seeds' changes [+0.000, +0.000])"
    assert f"PiSSA, changed by +0.000 {spread} from step 60 to step 80; threshold ±0.010: pass (flattened)." in text
    # seed 0's validation loss: 1.52 at the middle rate (chosen), 1.52 + 0.3 at the outer rates and with rho=1
    eva = "| EVA | 1.820 | **1.520** | 1.820 | — | 1.820 | lr 0.0006, default setting |"
    assert _row(text, "EVA", "### GSM8K") == eva


def test_an_empty_cache_renders_every_task_of_the_report_in_progress(tmp_path: Path) -> None:
    written = render(tmp_path / "no-runs", tmp_path / "out")  # the report's own protocols
    text = written[0].read_text()
    assert [p.name for p in written] == ["README.md"]
    assert text.count("in progress: 0 of 35 final runs cached; no verdict yet.") == len(PROTOCOLS)
    assert "No runs cached yet." in text and "| **Total** | 0 | 0.00 | 0.00 |" in text
    assert text.count("| tuning (0 of ") == len(METHODS) * len(PROTOCOLS)
    names = " ".join(p.name for p in PROTOCOLS)
    assert f"python benchmarks/converged.py --tasks {names}   # run what these tasks still need" in text


def test_an_interval_end_never_rounds_a_nonzero_value_to_zero() -> None:
    """A win whose interval starts at 0.0004 must not read ``[+0.000, ...]``, which looks like touching zero."""
    assert [bound(v, 3) for v in (0.0004, -0.00004, 0.02, 0.0)] == ["+0.0004", "\u22120.00004", "+0.020", "+0.000"]
    assert bound(1e-9, 3) == "+0.000000"  # three more decimals at most
