"""EVA init + training on a tiny Decision Transformer, save/reload through plain peft, and the recipe on a
tiny cache built by :func:`eva_rl.pretrain`."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

import eva_rl
import eva_rl.tasks
from eva_core import NotConvergedWarning, train
from eva_rl import ARSSettings, PretrainSettings


def test_eva_init_then_training_lowers_the_action_loss(
    tiny_dt: torch.nn.Module, dt_batches: list[Any], tmp_path: Path
) -> None:
    base = copy.deepcopy(tiny_dt)
    with pytest.warns(NotConvergedWarning):
        model = eva_rl.init(tiny_dt, dt_batches, rank=2, tau=0.999, max_steps=2, progress=False)
    assert sum(model.eva_state.ranks.values()) == 2 * len(model.eva_state.ranks)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any(
        "modules_to_save" in n and "embed_state" in n for n in trainable
    )
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(eva_rl.action_loss(model, dt_batches[0]), eva_rl.action_loss(base, dt_batches[0]))
    curve = train(
        model, dt_batches, eva_rl.action_loss, lambda m: {"loss": eva_rl.held_out_loss(m, dt_batches)},
        steps=12, eval_at=(0, 12), lr=3e-3,
    )  # fmt: skip
    assert curve[-1].metrics["loss"] < curve[0].metrics["loss"]

    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    model.eval()
    with torch.no_grad():
        ours = model(**{k: dt_batches[1][k] for k in eva_rl.plugin.MODEL_INPUTS}).action_preds
        theirs = reloaded(**{k: dt_batches[1][k] for k in eva_rl.plugin.MODEL_INPUTS}).action_preds
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_pretrain_cache_and_finetune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))
    ars = ARSSettings(iterations=1, directions=2, top=1, max_episode_steps=20)
    for name, task in list(eva_rl.tasks.TASKS.items()):
        monkeypatch.setitem(eva_rl.tasks.TASKS, name, task.replace(episodes=8, max_episode_steps=20, ars=ars))
    settings = PretrainSettings(hidden_size=16, layers=1, heads=1, context=5, steps=3, batch_size=4,
                                eval_episodes=1, held_out_batches=1)  # fmt: skip
    record = eva_rl.pretrain("dt-halfcheetah", settings)
    assert set(record["datasets"]) == {"halfcheetah", "walker2d"}
    assert (tmp_path / "dt-halfcheetah" / "model").is_dir()
    assert eva_rl.pretrain("dt-halfcheetah", settings) == record  # reused, not rebuilt
    changed = eva_rl.pretrain("dt-halfcheetah", dataclasses.replace(settings, steps=4))
    assert changed["settings"]["steps"] == 4  # other settings rebuild

    runs = {}
    for method in ("eva", "lora"):
        with pytest.warns(NotConvergedWarning) if method == "eva" else _nothing():
            runs[method] = eva_rl.finetune(
                "dt-halfcheetah", "walker2d", method, steps=2, eval_at=(0, 2), rank=2, batch_size=4,
                train_limit=5, dev_limit=2, episodes=1, dev_batches=1, eva_overrides={"max_steps": 2},
            )  # fmt: skip
    eva = runs["eva"]
    assert eva.metric == "normalized_return" and [p.step for p in eva.curve] == [0, 2]
    assert set(eva.curve[-1].metrics) == set(eva_rl.METRICS)
    assert set(eva.extra["ranks"]) == set(eva_rl.target_modules(eva_rl.load_pretrained()[0]))
    assert eva.extra["eva_batches"] == 2 and eva.extra["eva_seconds"] > 0
    assert "ranks" not in runs["lora"].extra
    assert sum(eva.extra["ranks"].values()) == 2 * len(eva.extra["ranks"])  # the same budget as lora's rank 2


def test_missing_cache_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))
    with pytest.raises(eva_rl.MissingPretrainingError, match=r"pretrain_rl\.py"):
        eva_rl.load_pretrained("dt-halfcheetah")
    with pytest.raises(FileNotFoundError, match=r"pretrain_rl\.py"):
        eva_rl.load_task_data("walker2d")


def _nothing() -> Any:
    return contextlib.nullcontext()
