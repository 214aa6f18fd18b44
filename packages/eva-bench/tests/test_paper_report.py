"""benchmarks/report.py: the paper-style tables, EVA's ranking and the figures from cached runs (hand-made
stores with hand-computed statistics), refusing stores made with other settings, and what it launches."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ["lora", "pissa", "eva"]
SEED_ARGS = ["--seeds", "0", "1"]

# Final held-out accuracy per (method, seed); eva/seed1 has no run on task B.
FINALS = {
    "a": {
        ("lora", 0): 0.80,
        ("lora", 1): 0.82,
        ("pissa", 0): 0.86,
        ("pissa", 1): 0.90,
        ("eva", 0): 0.87,
        ("eva", 1): 0.87,
    },
    "b": {("lora", 0): 0.70, ("lora", 1): 0.74, ("pissa", 0): 0.60, ("pissa", 1): 0.62, ("eva", 0): 0.75},
}


@pytest.fixture(scope="module")
def modules() -> Iterator[dict[str, ModuleType]]:
    """The report and its helpers, by their old script names."""
    names = {"report": "report", "_paper_runs": "runs", "_paper_tables": "tables", "_paper_plots": "plots"}
    yield {name: importlib.import_module(f"eva_bench.paper.{module}") for name, module in names.items()}


@pytest.fixture
def report(modules: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """report.py with one domain of two small suites (tasks a and b)."""
    suite = modules["report"].Suite
    suites = {"nlu": [suite("nlu", f"Task {t.upper()}", _args(t), f"nlu_{t}", 1.0) for t in ("a", "b")]}
    monkeypatch.setattr(modules["report"], "SUITES", suites)
    return modules["report"]


@pytest.fixture
def no_process(modules: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a process fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(importlib.import_module("eva_bench.processes").subprocess, "Popen", refuse)


def _args(task: str, steps: str = "4") -> tuple[str, ...]:
    return ("--model", "tiny", "--task", task, "--steps", steps, "--eval-at", "0", steps, "--lr", "2e-3")


def _run(
    method: str, seed: int, final: float, metric: str = "accuracy", peak: int | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "method": method,
        "seed": seed,
        "metric": metric,
        "init_seconds": 0.5 + seed,
        "train_seconds": 1.0,
        "trainable_parameters": 900 if method == "eva" else 1000,
        "curve": [{"step": 0, "metrics": {metric: 0.5}}, {"step": 4, "metrics": {metric: final}}],
        "extra": extra,
        "init_peak_bytes": peak,
        "run_wall_seconds": 60.0,
        "run_cpu_seconds": 30.0,
    }


def _store(task: str, steps: int = 4) -> dict[str, Any]:
    ranks = {f"bert.encoder.layer.{i}.attention.self.query": r for i, r in enumerate([6, 10, 8])}
    spectra = {name: [0.5, 0.25, 0.125, 0.0] for name in ranks}
    runs = {}
    for (method, seed), final in FINALS[task].items():
        extra: dict[str, Any] = {}
        if method == "eva" and seed == 0:  # task a: today's keys; task b: the old key, no spectra
            extra = {"ranks": ranks, "explained_variance": spectra} if task == "a" else {"eva_ranks": ranks}
        peak = (3 + 2 * seed) * 2**20 if method == "eva" and task == "a" else None  # 3 and 5 MiB
        runs[f"{method}/seed{seed}"] = _run(method, seed, final, peak=peak, **extra)
    settings = {"domain": "nlu", "model": "tiny", "task": task, "steps": steps, "eval_at": [0, steps], "lr": 0.002}
    meta = {"command": "x", "python": "3.11.7", "torch": "2.13.0", "threads": 1, "machine": "x86_64"}
    return {"meta": {**meta, "date": "2026-11-28", "settings": {**settings, "rank": 8, "threads": 1}}, "runs": runs}


def _write_stores(out: Path, steps_a: int = 4) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "nlu_a.json").write_text(json.dumps(_store("a", steps_a)))
    (out / "nlu_b.json").write_text(json.dumps(_store("b")))


def _row(page: str, name: str) -> list[str]:
    line = next(line for line in page.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_render_only_tables_rankings_and_figures(
    report: ModuleType, no_process: None, tmp_path: Path, capsys: Any
) -> None:
    _write_stores(tmp_path)
    assert report.main(["--render-only", "--out-dir", str(tmp_path), "--methods", *METHODS, *SEED_ARGS]) == 0
    page = (tmp_path / "nlu.md").read_text()
    # mean ± sample std over seeds, by hand: stdev(0.80, 0.82) = 0.01 * sqrt(2) = 0.0141
    assert _row(page, "LoRA") == ["LoRA", "0.8100 ± 0.0141", "0.7200 ± 0.0283", "0.7650", "1,000", "1.00", "—"]
    assert _row(page, "PiSSA")[1:4] == ["**0.8800 ± 0.0283**", "0.6100 ± 0.0141", "0.7450"]
    # EVA: one seed on task b, best there and on average; init s: mean of (0.5 + 1.5) / 2 and 0.5; peak MiB
    # known for task a only: (3 + 5) / 2
    assert _row(page, "EVA") == ["EVA", "0.8700 ± 0.0000", "**0.7500 (n=1)**", "**0.8100**", "900", "0.75", "4.0"]
    assert "| method | Task A accuracy ↑ | Task B accuracy ↑ | Avg ↑ |" in page
    assert "EVA ranks 2nd of 3 on Task A accuracy (best: PiSSA 0.8800 vs EVA 0.8700)." in page
    assert "EVA ranks 1st of 3 on Task B accuracy (runner-up: LoRA 0.7200 vs EVA 0.7500)." in page
    assert "EVA ranks 1st of 3 on the task average (runner-up: LoRA 0.7650 vs EVA 0.8100)." in page
    assert "Regenerate: `python benchmarks/report.py --domains nlu --methods lora pissa eva --seeds 0 1" in page
    assert (
        "2026-11-28" in page and "torch 2.13.0" in page and "11 of 12 runs cached, 11.0 min wall, 5.5 min CPU" in page
    )
    for name in ("nlu_a_curves", "nlu_a_eva_ranks", "nlu_a_spectra", "nlu_b_curves", "nlu_b_eva_ranks"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC, name
        assert f"]({name}.png)" in page
    assert not (tmp_path / "nlu_b_spectra.png").exists()
    assert "no EVA spectra (the EVA run did not record `explained_variance`)" in page
    index = (tmp_path / "README.md").read_text()
    assert "- [nlu](nlu.md): Task A, Task B (accuracy ↑): Avg EVA 0.8100 (1st of 3); best EVA 0.8100." in index
    out = capsys.readouterr().out
    assert "[missing] nlu_b: 1 run(s): eva (seed 1)" in out and "nlu_a:" not in out


def test_figures_are_the_same_bytes_on_a_second_render(report: ModuleType, no_process: None, tmp_path: Path) -> None:
    _write_stores(tmp_path)
    argv = ["--render-only", "--out-dir", str(tmp_path), "--methods", *METHODS, *SEED_ARGS]
    report.main(argv)
    first = {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}
    report.main(argv)
    assert first == {p.name: p.read_bytes() for p in tmp_path.glob("*.png")}


def test_lower_is_better_metrics_bold_and_rank_the_smallest(modules: dict[str, ModuleType]) -> None:
    tables = modules["_paper_tables"]
    assert tables.lower_is_better("loss") and tables.lower_is_better("action_mse")
    assert not tables.lower_is_better("accuracy") and not tables.lower_is_better("normalized_return")
    runs = {"lora/seed0": _run("lora", 0, 1.0, "loss"), "lora/seed1": _run("lora", 1, 1.2, "loss")}
    runs |= {"eva/seed0": _run("eva", 0, 0.9, "loss"), "eva/seed1": _run("eva", 1, 0.95, "loss")}
    task = tables.TaskRuns("T", "t", {}, runs)
    table = tables.domain_table([task], ["lora", "eva"], [0, 1])
    assert "| EVA | **0.9250 ± 0.0354** | **0.9250** |" in table
    assert "| LoRA | 1.1000 ± 0.1414 | 1.1000 |" in table and "Avg ↓" in table
    means = tables.task_means(task, ["lora", "eva"], [0, 1])
    assert tables.ranking_sentence("T loss", means, lower=True) == (
        "EVA ranks 1st of 2 on T loss (runner-up: LoRA 1.1000 vs EVA 0.9250)."
    )
    # action_mse, where EVA is worse: never called a win
    assert tables.ranking_sentence("T action_mse", {"lora": 0.1, "eva": 0.2, "pissa": 0.3}, lower=True) == (
        "EVA ranks 2nd of 3 on T action_mse (best: LoRA 0.1000 vs EVA 0.2000)."
    )
    assert tables.ranking_sentence("T", {"lora": 0.8, "eva": 0.8}, lower=False) == (
        "EVA ties for 1st of 2 on T with LoRA (0.8000)."
    )
    assert tables.ranking_sentence("T", {"lora": 0.8}, lower=False) == "EVA has no runs on T; best: LoRA 0.8000."


def test_a_store_made_with_other_settings_is_refused(
    report: ModuleType, no_process: None, tmp_path: Path, capsys: Any
) -> None:
    _write_stores(tmp_path, steps_a=8)  # task a's file: 8 steps; its suite: 4
    assert report.main(["--out-dir", str(tmp_path), "--methods", *METHODS, "--seeds", "0"]) == 1
    out = capsys.readouterr().out
    assert "[refused] nlu_a.json" in out and "steps: the file has 8, the suite sets 4" in out
    assert "eval_at: the file has [0, 8], the suite sets 0 4" in out and "delete" in out
    page = (tmp_path / "nlu.md").read_text()
    assert "Task A accuracy" not in page and "Task A left out" in page


def test_settings_compare_values_not_spellings(modules: dict[str, ModuleType]) -> None:
    runs = modules["_paper_runs"]
    suite = runs.Suite("nlu", "A", _args("a"), "nlu_a")
    same = {"domain": "nlu", "model": "tiny", "task": "a", "steps": 4, "eval_at": [0, 4], "lr": 0.002}
    assert runs.settings_mismatches(suite, same) == []
    assert runs.settings_mismatches(suite, {**same, "lr": 0.001}) == ["lr: the file has 0.001, the suite sets 2e-3"]
    with pytest.raises(ValueError, match="--seeds"):
        runs.Suite("nlu", "A", ("--model", "tiny", "--seeds", "0"), "nlu_a")


def test_missing_runs_launch_compare_and_a_failure_is_reported(
    report: ModuleType, modules: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    (tmp_path / "template.json").write_text(json.dumps(_store("a")))
    fake = tmp_path / "compare.py"
    fake.write_text(
        "import json, shutil, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "open(out + '.argv', 'w').write(json.dumps(sys.argv[1:]))\n"
        "if out.endswith('nlu_b'):\n    print('boom')\n    sys.exit(3)\n"
        f"shutil.copy({str(tmp_path / 'template.json')!r}, out + '.json')\n"
    )
    monkeypatch.setattr(modules["_paper_runs"], "COMPARE", fake)
    monkeypatch.setattr(modules["_paper_runs"], "POLL_SECONDS", 0.02)
    out_dir = tmp_path / "paper"
    assert report.main(["--out-dir", str(out_dir), "--methods", *METHODS, *SEED_ARGS, "--jobs", "2"]) == 1
    argv = json.loads((out_dir / "nlu_a.argv").read_text())
    assert argv[:2] == ["nlu", "--model"] and argv[-11:-2] == ["--methods", *METHODS, *SEED_ARGS, "--threads", "1"]
    assert "boom" in (out_dir / "logs" / "nlu_b.log").read_text()
    out = capsys.readouterr().out
    assert f"[FAILED] nlu_b: see {out_dir / 'logs' / 'nlu_b.log'}" in out
    assert "| PiSSA | **0.8800 ± 0.0283** |" in (out_dir / "nlu.md").read_text()


def test_cells_count_the_seeds_beating_the_majority_baseline() -> None:
    """A seed at the baseline (0.823) or below it does not count; a task without a baseline shows nothing."""
    from eva_bench.paper.tables import TaskRuns, beating_majority

    finals = {0: 0.823, 1: 0.85, 2: 0.80}
    runs = {f"lora/seed{s}": {"metric": "f1", "curve": [{"step": 50, "metrics": {"f1": v}}]} for s, v in finals.items()}
    assert beating_majority(TaskRuns("MRPC", "m", {}, runs, majority=0.823), "lora", [0, 1, 2]) == " (1/3 > majority)"
    assert beating_majority(TaskRuns("MRPC", "m", {}, runs), "lora", [0, 1, 2]) == ""
    assert beating_majority(TaskRuns("MRPC", "m", {}, runs, majority=0.823), "eva", [0, 1, 2]) == ""
