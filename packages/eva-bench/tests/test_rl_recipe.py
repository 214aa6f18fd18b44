"""The rl harness end to end on a tiny cache built by :func:`eva_bench.rl.pretrain`: the cached artifacts
(reused, rebuilt on other settings, read back by eva-rl's ``eva-lora fit`` hooks), the fine-tuning recipe over
:func:`eva_bench.recipe.run` and the comparison runner."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pytest

import eva_rl
from eva_bench.rl import METRICS, PRETRAINED, TASKS, PretrainSettings, finetune, load_task_data, pretrain, run_from_args
from eva_bench.rl import tasks as rl_tasks
from eva_bench.rl.policies import ARSSettings
from eva_core import LoadedModel
from eva_core.errors import NotConvergedWarning
from eva_rl import cli
from eva_rl.architectures import target_modules


@pytest.fixture
def tiny_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PretrainSettings:
    """An eva cache in ``tmp_path`` holding tiny versions of both tasks' datasets (8 episodes of at most
    20 steps, a 1-iteration ARS policy) and of ``dt-halfcheetah``; its settings."""
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))
    ars = ARSSettings(iterations=1, directions=2, top=1, max_episode_steps=20)
    for name, task in list(TASKS.items()):
        monkeypatch.setitem(TASKS, name, task.replace(episodes=8, max_episode_steps=20, ars=ars))
    settings = PretrainSettings(hidden_size=16, layers=1, heads=1, context=5, steps=3, batch_size=4,
                                eval_episodes=1, held_out_batches=1)  # fmt: skip
    monkeypatch.setitem(PRETRAINED, "dt-halfcheetah", settings)
    return settings


def test_aliases_are_the_ones_eva_fit_knows() -> None:
    assert set(PRETRAINED) == set(cli.MODEL_ALIASES) and set(TASKS) == set(cli.TASK_ALIASES)
    assert rl_tasks.DATASETS_CACHE == cli.DATASETS_CACHE


def test_pretrain_cache_and_finetune(tiny_cache: PretrainSettings, tmp_path: Path) -> None:
    record = pretrain("dt-halfcheetah")
    assert set(record["datasets"]) == {"halfcheetah", "walker2d"}
    assert (tmp_path / "dt-halfcheetah" / "model").is_dir()
    assert pretrain("dt-halfcheetah") == record  # reused, not rebuilt
    changed = pretrain("dt-halfcheetah", dataclasses.replace(tiny_cache, steps=4))
    assert changed["settings"]["steps"] == 4  # other settings rebuild

    runs = {}
    for method in ("eva", "lora"):
        with pytest.warns(NotConvergedWarning) if method == "eva" else contextlib.nullcontext():
            runs[method] = finetune(
                "dt-halfcheetah", "walker2d", method, steps=2, eval_at=(0, 2), rank=2, batch_size=4,
                train_limit=5, dev_limit=2, episodes=1, dev_batches=1, eva_overrides={"max_steps": 2},
            )  # fmt: skip
    eva = runs["eva"]
    assert eva.metric == "normalized_return" and [p.step for p in eva.curve] == [0, 2]
    assert set(eva.curve[-1].metrics) == set(METRICS)
    assert set(eva.extra["ranks"]) == set(target_modules(eva_rl.load_pretrained()[0]))
    assert eva.extra["eva_batches"] == 2 and eva.extra["eva_seconds"] > 0
    assert eva.extra["task"] == "walker2d" and eva.extra["train_episodes"] == 5
    assert "ranks" not in runs["lora"].extra
    assert sum(eva.extra["ranks"].values()) == 2 * len(eva.extra["ranks"])  # the same budget as lora's rank 2


def test_eva_fit_reads_the_cache_the_harness_writes(tiny_cache: PretrainSettings) -> None:
    pretrain("dt-halfcheetah")
    loaded = cli.eva_cli_load_model("dt-halfcheetah", "walker2d", {})
    assert isinstance(loaded, LoadedModel) and loaded.processor == cli.TrajectoryInput(tiny_cache.context)
    batches: Any = cli.eva_cli_batches("walker2d", loaded, 4, None, {})
    data = load_task_data("walker2d")
    assert batches.return_scale == data.task.return_scale and len(batches.episodes) == len(data.episodes)
    for ours, theirs in zip(batches.episodes, data.episodes, strict=True):
        assert (ours.states == theirs.states).all() and (ours.rewards == theirs.rewards).all()


def test_runner_builds_the_alias_once(tiny_cache: PretrainSettings) -> None:
    args = argparse.Namespace(
        model="dt-halfcheetah", task="walker2d", steps=1, eval_at=None, rank=2, lr=1e-3, batch_size=4,
        train_limit=3, dev_limit=2, episodes=1, eva_max_batches=None,
    )  # fmt: skip
    record = run_from_args(args, "lora", 0)
    assert [p.step for p in record.curve] == [0, 1]  # rl evaluates at 0 and at the end by default
    assert record.method == "lora" and record.seed == 0


def test_missing_cache_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))
    with pytest.raises(eva_rl.MissingPretrainingError, match=r"pretrain_rl\.py"):
        eva_rl.load_pretrained("dt-halfcheetah")
    with pytest.raises(FileNotFoundError, match=r"pretrain_rl\.py"):
        load_task_data("walker2d")


def test_validation_episodes_take_the_curve_and_training_windows_stay_paired(
    tiny_cache: PretrainSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``validation``, the curve is scored on episodes set apart from training (rollouts from other
    environment seeds), the held-out score comes once at the end, and EVA's pass over the windows leaves the
    training windows the same as LoRA's for the seed."""
    from eva_bench.rl import recipe

    pretrain("dt-halfcheetah")
    seen: dict[str, list[float]] = {"lora": [], "eva": []}
    rollout_seeds: list[int] = []
    original_loss, original_rollouts = recipe.action_loss, recipe.rollout_returns

    def loss_spy(model: Any, batch: Any) -> Any:
        seen[method].append(float(batch["states"].sum()))
        return original_loss(model, batch)

    def rollouts_spy(*args: Any, seed: int, **kwargs: Any) -> Any:
        rollout_seeds.append(seed)
        return original_rollouts(*args, seed=seed, **kwargs)

    monkeypatch.setattr(recipe, "action_loss", loss_spy)
    monkeypatch.setattr(recipe, "rollout_returns", rollouts_spy)
    records = {}
    for method in ("lora", "eva"):
        with pytest.warns(NotConvergedWarning) if method == "eva" else contextlib.nullcontext():
            records[method] = finetune(
                "dt-halfcheetah", "walker2d", method, steps=2, eval_at=(0, 2), rank=2, batch_size=4, dev_limit=2,
                validation=2, episodes=1, held_out_episodes=2, dev_batches=1, eva_overrides={"max_steps": 1},
            )  # fmt: skip
    lora = records["lora"]
    assert lora.extra["validation_episodes"] == 2 and lora.extra["train_episodes"] == 8 - 2 - 2
    assert lora.held_out is not None and set(lora.held_out) == set(METRICS)
    assert rollout_seeds[:3] == [recipe.VALIDATION_SEED] * 2 + [recipe.HELD_OUT_SEED]
    assert seen["lora"][-2:] == seen["eva"][-2:]  # the two training steps read the same windows
