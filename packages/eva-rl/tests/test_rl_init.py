"""``eva_rl.init`` on a tiny Decision Transformer: the same as ``eva_core.init`` (the plugin's defaults),
adapters that train and reload through plain peft, and an import that needs no jax, MuJoCo or OpenGL."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from rl_data import JAX_MUJOCO_OPENGL, python_without

import eva_core
import eva_rl
from eva_core.errors import NotConvergedWarning
from eva_rl.batches import MODEL_INPUTS

_FIT = {"tau": 0.999, "max_steps": 2, "progress": False}


def _action_mse(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch})
    real = batch["attention_mask"] != 0  # (B, K)
    return torch.mean((out.action_preds[real] - batch["actions"][real]) ** 2)


def test_init_equals_eva_core_init(tiny_dt: torch.nn.Module, dt_batches: list[Any]) -> None:
    other = copy.deepcopy(tiny_dt)
    with pytest.warns(NotConvergedWarning):
        ours = eva_rl.init(tiny_dt, dt_batches, **_FIT)
    with pytest.warns(NotConvergedWarning):
        core = eva_core.init(other, dt_batches, **_FIT)
    assert ours.eva_state.config.rank == 8 and ours.eva_state.config.rho == 2.0  # the plugin's defaults
    assert ours.eva_state.ranks == core.eva_state.ranks
    for name in ours.eva_state.ranks:
        torch.testing.assert_close(ours.eva_state.components(name), core.eva_state.components(name), rtol=0, atol=0)
    mine, theirs = ours.peft_config["default"], core.peft_config["default"]
    assert mine.fan_in_fan_out and mine.lora_alpha == 8 and mine.lora_dropout == 0.0
    assert set(mine.modules_to_save or []) == set(eva_rl.architectures.MODULES_TO_SAVE)
    assert mine.to_dict() == theirs.to_dict()


def test_eva_init_trains_and_reloads_through_peft(
    tiny_dt: torch.nn.Module, dt_batches: list[Any], tmp_path: Path
) -> None:
    base = copy.deepcopy(tiny_dt)
    with pytest.warns(NotConvergedWarning):
        model = eva_rl.init(tiny_dt, dt_batches, rank=2, **_FIT)
    assert sum(model.eva_state.ranks.values()) == 2 * len(model.eva_state.ranks)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable)
    assert any("modules_to_save" in n and "embed_state" in n for n in trainable)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(_action_mse(model, dt_batches[0]), _action_mse(base, dt_batches[0]))
        before = sum(float(_action_mse(model, b)) for b in dt_batches)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for step in range(12):
        optimizer.zero_grad()
        _action_mse(model, dt_batches[step % len(dt_batches)]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert sum(float(_action_mse(model, b)) for b in dt_batches) < before

    # A model built from a config has no name_or_path: peft 0.15's "auto" would ask the hub whether the
    # vocabulary changed (and warn, offline). Nothing to ask: the embeddings are modules_to_save, saved anyway.
    model.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        ours = model(**{k: dt_batches[1][k] for k in MODEL_INPUTS}).action_preds
        theirs = reloaded(**{k: dt_batches[1][k] for k in MODEL_INPUTS}).action_preds
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


_INIT_A_DECISION_TRANSFORMER = """
import numpy as np
import torch
from transformers import DecisionTransformerConfig, DecisionTransformerModel

import eva_rl

torch.manual_seed(0)
config = DecisionTransformerConfig(state_dim=3, act_dim=2, hidden_size=16, n_layer=1, n_head=1, max_ep_len=32)
model = DecisionTransformerModel(config).eval()
rng = np.random.default_rng(0)
episodes = [
    eva_rl.Trajectory(rng.normal(size=(20, 3)), rng.uniform(-1, 1, (20, 2)), rng.normal(size=20)) for _ in range(4)
]
loader = eva_rl.trajectory_batches(episodes, context=5, batch_size=4, batches=3)
peft_model = eva_rl.init(model, loader, rank=2, tau=0.0, min_steps=2, progress=False)
assert peft_model.peft_config["default"].fan_in_fan_out
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in BLOCKED)
assert not loaded, loaded
print("ranks", sum(peft_model.eva_state.ranks.values()))
"""


def test_import_and_init_need_no_jax_mujoco_opengl_or_minari() -> None:
    """In a fresh interpreter where jax, MuJoCo, OpenGL, gymnasium, minari (and eva_bench) cannot be
    imported, ``import eva_rl`` and ``eva_rl.init`` on a Decision Transformer still work (the installed eva
    plugins load too: ``eva_core.init`` asks them)."""
    blocked = (*JAX_MUJOCO_OPENGL, "gymnasium", "minari", "h5py", "eva_bench")
    result = python_without(blocked, _INIT_A_DECISION_TRANSFORMER)
    assert result.returncode == 0, result.stderr
    assert "ranks 8" in result.stdout  # rank 2 on the 4 projections of the one block
