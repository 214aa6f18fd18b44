"""The converged protocol's bookkeeping: the validation carve, the run cache (atomic, never overwritten,
stale settings set aside), the tuning stages and the pool that re-plans after every run."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eva_bench.converged import cli, protocol, runner, selection
from eva_bench.converged.cache import RunKey, cached_runs, run_path, save_run
from eva_bench.converged.protocol import PROTOCOLS, TaskProtocol, get_protocol
from eva_bench.splits import carve
from eva_core.errors import InvalidConfigError

TOY = TaskProtocol(
    "toy",
    "Toy",
    "vision",
    "m",
    "accuracy",
    True,
    steps=8,
    eval_every=2,
    lr_grid=(1e-3, 2e-3, 4e-3),
    flat_threshold=0.01,
)
LOSS = dataclasses.replace(TOY, name="toyloss", domain="llm", metric="loss", higher_is_better=False, eval_every=4)


def _run(protocol: TaskProtocol, late: float, early: float = 0.0) -> dict[str, Any]:
    """A run file body whose curve is ``early`` before the last quarter of the steps and ``late`` in it."""
    curve = [
        {"step": s, "metrics": {protocol.metric: late if 4 * s >= 3 * protocol.steps else early}}
        for s in protocol.eval_at
    ]
    return {"record": {"curve": curve, "held_out": {protocol.metric: late}}, "cpu_seconds": 1.0}


@given(st.lists(st.integers(), min_size=1, max_size=40), st.data())
def test_carve_sets_the_last_examples_apart(examples: list[int], data: st.DataObject) -> None:
    validation = data.draw(st.integers(0, len(examples) - 1))
    kept, carved = carve(examples, validation)
    assert kept + carved == examples and len(carved) == validation


@pytest.mark.parametrize("validation", [-1, 3, 4])
def test_carve_refuses_a_split_that_leaves_nothing_to_train_on(validation: int) -> None:
    with pytest.raises(InvalidConfigError, match=f"validation={validation} must be in \\[0, 2\\]"):
        carve([1, 2, 3], validation)


def test_every_protocol_is_well_formed() -> None:
    assert [get_protocol(p.name) for p in PROTOCOLS] == list(PROTOCOLS)
    for task in PROTOCOLS:
        assert len(task.lr_grid) >= 3 and task.eval_at[0] == 0 and task.eval_at[-1] == task.steps
        assert task.finetune.get("validation", 0) > 0  # the curve is never the held-out split
    with pytest.raises(KeyError, match="pick one of"):
        get_protocol("imagenet")
    with pytest.raises(ValueError, match="3 learning rates"):
        TaskProtocol("x", "X", "nlu", "m", "f1", True, steps=10, eval_every=5, lr_grid=(1e-3,), flat_threshold=0.1)


def test_the_cache_writes_once_and_sets_stale_settings_apart(tmp_path: Path) -> None:
    key = RunKey.of("toy", "eva", 0.0015, 0, {"rho": 1.0})
    assert key.label() == "eva_lr0.0015_rho1_seed0" == RunKey.of("toy", "eva", 0.0015, 0, {"rho": 1}).label()
    path = save_run(tmp_path, key, TOY, _run(TOY, 0.9))
    assert path == run_path(tmp_path, key) and [p.name for p in path.parent.iterdir()] == [path.name]
    with pytest.raises(FileExistsError, match="delete it"):
        save_run(tmp_path, key, TOY, _run(TOY, 0.1))
    assert json.loads(path.read_text())["record"]["held_out"] == {"accuracy": 0.9}  # not overwritten
    runs, stale = cached_runs(tmp_path, TOY)
    assert list(runs) == [key] and stale == []
    longer = TaskProtocol("toy", "Toy", "vision", "m", "accuracy", True, steps=10, eval_every=2,
                          lr_grid=TOY.lr_grid, flat_threshold=0.01)  # fmt: skip
    assert cached_runs(tmp_path, longer) == ({}, [path])
    path.write_text(path.read_text()[:40])  # a copy cut short
    with pytest.raises(ValueError, match=f"{path.name} is not a run record.*delete it"):
        cached_runs(tmp_path, TOY)


def _fill(runs: dict[RunKey, Any], protocol: TaskProtocol, scores: dict[tuple[str, float, int], float]) -> None:
    for (method, lr, seed), score in scores.items():
        runs[RunKey.of(protocol.name, method, lr, seed)] = _run(protocol, score)


def test_stages_tune_the_rate_then_the_key_setting_then_run_the_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "METHODS", ("lora", "eva"))
    runs: dict[RunKey, Any] = {}
    first = selection.needed_runs(TOY, runs)
    assert {(k.method, k.lr, k.seed) for k in first} == {(m, lr, 0) for m in ("lora", "eva") for lr in TOY.lr_grid}
    _fill(runs, TOY, {("lora", 1e-3, 0): 0.7, ("lora", 2e-3, 0): 0.8, ("lora", 4e-3, 0): 0.75})
    _fill(runs, TOY, {("eva", 1e-3, 0): 0.8, ("eva", 2e-3, 0): 0.8})
    runs[RunKey.of("toy", "eva", 4e-3, 0)] = {"diverged": "training loss became nan at step 3"}
    due = selection.needed_runs(TOY, runs)
    assert [k for k in due if k.method == "lora"] == [RunKey.of("toy", "lora", 2e-3, s) for s in (1, 2, 3, 4)]
    assert [k for k in due if k.method == "eva"] == [RunKey.of("toy", "eva", 5e-4, 0)]  # tie: the lower lr, an edge
    _fill(runs, TOY, {("eva", 5e-4, 0): 0.8})  # a tie again: the grid's rate stays
    due = selection.needed_runs(TOY, runs)
    assert [k for k in due if k.method == "eva"] == [RunKey.of("toy", "eva", 1e-3, 0, {"rho": 1})]
    runs[RunKey.of("toy", "eva", 1e-3, 0, {"rho": 1})] = _run(TOY, 0.85)
    chosen = selection.chosen(TOY, runs)
    assert chosen["eva"] == [RunKey.of("toy", "eva", 1e-3, s, {"rho": 1}) for s in range(5)]
    assert selection.validation_score(TOY, runs[RunKey.of("toy", "eva", 4e-3, 0)]) == -math.inf


@pytest.mark.parametrize("task", PROTOCOLS, ids=lambda p: p.name)
def test_the_rate_beyond_an_edge_steps_out_as_far_as_the_grid_steps_in(task: TaskProtocol) -> None:
    low, *inner, high = sorted(task.lr_grid)
    below, above = selection.beyond_edge(task, low), selection.beyond_edge(task, high)
    assert below is not None and above is not None and below < low and above > high
    assert below / low == pytest.approx(low / sorted(task.lr_grid)[1], rel=0.05)  # 2 significant digits
    assert above / high == pytest.approx(high / inner[-1], rel=0.05)
    assert [selection.beyond_edge(task, lr) for lr in inner] == [None] * len(inner)


def test_a_rate_beyond_the_edge_that_wins_takes_the_key_setting_and_the_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """LoRA's grid peaks at its top (4e-3): 8e-3 is tried and wins; EVA's at its bottom, and 5e-4 loses."""
    monkeypatch.setattr(selection, "METHODS", ("lora", "eva"))
    runs: dict[RunKey, Any] = {}
    _fill(runs, TOY, {("lora", 1e-3, 0): 0.7, ("lora", 2e-3, 0): 0.8, ("lora", 4e-3, 0): 0.85})
    _fill(runs, TOY, {("eva", 1e-3, 0): 0.9, ("eva", 2e-3, 0): 0.8, ("eva", 4e-3, 0): 0.7})
    assert selection.needed_runs(TOY, runs) == [RunKey.of("toy", "lora", 8e-3, 0), RunKey.of("toy", "eva", 5e-4, 0)]
    _fill(runs, TOY, {("lora", 8e-3, 0): 0.86, ("eva", 5e-4, 0): 0.89})
    due = selection.needed_runs(TOY, runs)
    lora_seeds = [RunKey.of("toy", "lora", 8e-3, s) for s in (1, 2, 3, 4)]
    assert due == [*lora_seeds, RunKey.of("toy", "eva", 1e-3, 0, {"rho": 1})]
    runs[RunKey.of("toy", "eva", 1e-3, 0, {"rho": 1})] = {"diverged": "loss is nan"}
    assert selection.chosen(TOY, runs)["eva"] == [RunKey.of("toy", "eva", 1e-3, s) for s in range(5)]
    runs[RunKey.of("toy", "eva", 2e-3, 0, {"rho": 1})] = _run(TOY, 0.99)  # off the path: it plays no part
    assert selection.chosen(TOY, runs)["eva"][0] == RunKey.of("toy", "eva", 1e-3, 0)
    grid = [RunKey.of("toy", "eva", lr, 0) for lr in TOY.lr_grid]
    path = [*grid, RunKey.of("toy", "eva", 5e-4, 0), RunKey.of("toy", "eva", 1e-3, 0, {"rho": 1})]
    assert selection.tuning(TOY, "eva", runs).path == path
    assert selection.tuning(TOY, "lora", runs).path == [
        *[RunKey.of("toy", "lora", lr, 0) for lr in TOY.lr_grid],
        RunKey.of("toy", "lora", 8e-3, 0),
    ]


def test_a_lower_is_better_metric_picks_the_lowest_late_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "METHODS", ("lora",))
    runs: dict[RunKey, Any] = {}
    _fill(runs, LOSS, {("lora", 1e-3, 0): 1.2, ("lora", 2e-3, 0): 1.1, ("lora", 4e-3, 0): 1.3})
    runs[RunKey.of("toyloss", "lora", 2e-3, 0)] = _run(LOSS, 1.1, early=9.0)  # only the last quarter counts
    assert selection.chosen(LOSS, runs)["lora"][0] == RunKey.of("toyloss", "lora", 2e-3, 0)


_FAKE_RUN = """
import json, sys, pathlib
path, body = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
if body["key"]["method"] == "broken":
    sys.exit(3)
path.parent.mkdir(parents=True, exist_ok=True)
partial = path.with_suffix(".partial")  # written whole, then renamed, as save_run does: the pool may read meanwhile
partial.write_text(json.dumps(body))
partial.replace(path)
"""


def test_the_pool_runs_every_stage_and_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in for each run (a tiny process writing a file with LoRA best at 2e-3): the pool re-plans
    after each finished run until nothing is due; a failing run is reported, not retried."""
    monkeypatch.setattr(selection, "METHODS", ("lora", "eva", "broken"))

    def command(cache: Path, key: RunKey) -> list[str]:
        body = {"key": key.to_json(), "protocol": TOY.settings(), **_run(TOY, 1.0 - abs(key.lr - 2e-3))}
        return [sys.executable, "-c", _FAKE_RUN, str(run_path(cache, key)), json.dumps(body)]

    monkeypatch.setattr(runner, "single_run_command", command)
    monkeypatch.setattr(runner, "POLL_SECONDS", 0.02)
    failed = runner.run_needed(tmp_path / "runs", [TOY], jobs=2, logs=tmp_path / "logs")
    assert sorted(k.lr for k in failed) == list(TOY.lr_grid) and {k.method for k in failed} == {"broken"}
    runs, _ = cached_runs(tmp_path / "runs", TOY)
    assert len(runs) == 3 + 4 + 3 + 1 + 4  # lora: grid + seeds; eva: grid + rho=1 + seeds
    assert selection.needed_runs(TOY, runs) == [k for k in failed]
    assert all(k.lr == 2e-3 for k in selection.chosen(TOY, runs)["lora"])


def test_a_launched_run_parses_back_to_its_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = RunKey.of("digits", "eva_dora", 0.0015, 3, protocol.KEY_SETTINGS["eva_dora"][0])  # as the pool makes it
    command = runner.single_run_command(tmp_path, key)
    assert command[1] == str(runner.SCRIPT) and runner.SCRIPT.is_file()
    seen: list[RunKey] = []
    monkeypatch.setattr(cli, "run_one", lambda cache, parsed: seen.append(parsed) or cache)
    assert cli.main(command[2:]) == 0
    assert seen == [key] and seen[0].label() == key.label()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plan", "--tasks", "imagenet"], "invalid choice: 'imagenet'"),
        (["--jobs", "0"], "0 runs at once cannot run anything; give 1 or more"),
        (["--one", "digits", "lora"], "--one digits lora: 2 values, 4 at least; give TASK METHOD LR SEED"),
        (["--one", "digits", "lora", "fast", "0"], "could not convert string to float: 'fast'"),
        (["--one", "digits", "qlora", "1e-3", "0"], "method 'qlora' is none of"),
        (["--one", "imagenet", "lora", "1e-3", "0"], "task='imagenet' has no converged protocol"),
        (["--one", "digits", "eva", "1e-3", "0", "rho"], "a setting is NAME=VALUE, got ['rho']"),
    ],
)
def test_the_command_line_refuses_what_it_cannot_run(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A usage error naming the value, before anything runs or is written (``--jobs 0`` used to run nothing and
    exit 0; a bad ``--one`` ended in a traceback)."""
    monkeypatch.setattr(cli, "run_needed", lambda *args, **kwargs: pytest.fail("a run was started"))
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_majority_baselines_are_written_once_and_read_back(tmp_path: Path) -> None:
    """Digits' held-out labels counted by hand; MRPC's all-"paraphrase" F1 on its first 600 dev pairs; none
    for the rl and llm tasks."""
    from collections import Counter

    from eva_bench.converged.baselines import majority_score, read_baselines, write_baselines
    from eva_bench.nlu import labelled_rows, shared_glue_path
    from eva_bench.vision.tasks import get_task

    labels = get_task("digits").load("dev", None)[1].tolist()
    assert majority_score(get_protocol("digits")) == Counter(labels).most_common(1)[0][1] / len(labels)
    positives = sum(int(row["label"]) for row in labelled_rows(shared_glue_path("mrpc", "dev"), "mrpc", limit=600))
    assert majority_score(get_protocol("mrpc")) == pytest.approx(2 * positives / (2 * positives + (600 - positives)))
    assert majority_score(get_protocol("walker2d")) is None and majority_score(get_protocol("gsm8k")) is None
    assert read_baselines(tmp_path) == {}
    write_baselines(tmp_path, [get_protocol("digits"), get_protocol("gsm8k")])
    assert read_baselines(tmp_path) == {"digits": majority_score(get_protocol("digits"))}


def test_plan_counts_every_run_a_task_needs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """7 methods x (3 rates + 4 more seeds) + rho=1 for EVA and EVA+DoRA = 51 runs a task."""
    save_run(
        tmp_path, RunKey.of("digits", "lora", 1.5e-3, 0), get_protocol("digits"), _run(get_protocol("digits"), 0.9)
    )
    assert cli.main(["--plan", "--cache", str(tmp_path), "--tasks", "digits", "sst2"]) == 0
    digits, sst2 = capsys.readouterr().out.splitlines()
    # the cached run's 1 CPU-second predicts the 50 left; SST-2 has none, so the protocol's 1.8 CPU-min a run does
    fewest = "51 runs at the fewest"
    assert digits == f"digits: 1 runs cached (0 CPU-min), 0 stale, 20 due now; {fewest}; at least ~1 CPU-min to finish"
    assert sst2 == f"sst2: 0 runs cached (0 CPU-min), 0 stale, 21 due now; {fewest}; at least ~92 CPU-min to finish"


def test_plan_calls_a_task_with_every_final_run_cached_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every run scores alike, so each grid's lowest rate wins its ties and the rate beyond it is run too:
    58 runs, more than the fewest (51); the plan says complete, not "58 of 51"."""
    digits = get_protocol("digits")
    runs, _ = cached_runs(tmp_path, digits)
    while due := selection.needed_runs(digits, runs):
        for key in due:
            save_run(tmp_path, key, digits, _run(digits, 0.9))
        runs, _ = cached_runs(tmp_path, digits)
    assert cli.main(["--plan", "--cache", str(tmp_path), "--tasks", "digits"]) == 0
    assert capsys.readouterr().out == "digits: 58 runs cached (1 CPU-min), 0 stale; complete\n"


def test_running_some_tasks_keeps_every_tasks_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--tasks digits`` runs only digits, but the baselines file the page reads keeps every task's."""
    monkeypatch.setattr(cli, "run_needed", lambda *args: [])
    monkeypatch.setattr("eva_bench.converged.page.render", lambda *args: [])
    assert cli.main(["--out", str(tmp_path), "--tasks", "digits"]) == 0
    assert set(json.loads((tmp_path / "baselines.json").read_text())) == {"fmnist59", "digits", "sst2", "mrpc"}
