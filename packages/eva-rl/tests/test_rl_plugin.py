"""What the ``rl`` plugin claims and targets, and the (B, 3T) token mask against the model's own stacking."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from eva_core import EvaConfig
from eva_rl import architectures, plugin
from eva_rl.batches import MODEL_INPUTS, token_mask


def test_claims_decision_transformers_only(tiny_dt: torch.nn.Module) -> None:
    gpt2 = GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, bos_token_id=None, eos_token_id=None)
    )
    assert plugin.eva_claims_model(model=tiny_dt)
    assert not plugin.eva_claims_model(model=gpt2)
    assert not plugin.eva_claims_model(model=torch.nn.Linear(3, 3))


def test_targets_are_the_block_projections(tiny_dt: torch.nn.Module) -> None:
    targets = plugin.eva_target_modules(model=tiny_dt, config=EvaConfig(domain="rl"))
    suffixes = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert targets == [f"encoder.h.{i}.{s}" for i in range(2) for s in suffixes]


def test_defaults_and_lora_fields(tiny_dt: torch.nn.Module) -> None:
    assert plugin.eva_default_config(model=tiny_dt) == {"rank": 8, "rho": 2.0}
    targets = architectures.target_modules(tiny_dt)
    fields = plugin.eva_lora_fields(model=tiny_dt, targets=targets)
    assert fields == {"fan_in_fan_out": True, "modules_to_save": list(architectures.MODULES_TO_SAVE)}
    # a layer targeted by name is not also trained in full; nn.Linear targets keep peft's fan_in_fan_out
    linear = plugin.eva_lora_fields(model=tiny_dt, targets=["embed_state"])
    assert "fan_in_fan_out" not in linear and "embed_state" not in linear["modules_to_save"]


def _padded(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``batch`` with some timesteps of each window masked as padding, left and right and inside."""
    mask = torch.ones_like(batch["attention_mask"])
    mask[0, :3] = 0
    mask[1, -2:] = 0
    mask[2, 4] = 0
    return {**batch, "attention_mask": mask}


def test_token_mask_matches_the_models_stacking(tiny_dt: torch.nn.Module, dt_batches: list[Any]) -> None:
    batch = _padded(dt_batches[0])
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen["mask"] = kwargs["attention_mask"]

    def block_input(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        seen.setdefault("hidden", args[0].detach().clone())

    handles = [
        tiny_dt.encoder.register_forward_pre_hook(grab, with_kwargs=True),
        tiny_dt.encoder.h[0].register_forward_pre_hook(block_input),
    ]
    try:
        with torch.no_grad():
            tiny_dt(**{k: batch[k] for k in MODEL_INPUTS if k in batch})
            first = seen.pop("hidden")
            # change the inputs of padded timesteps only: exactly their three tokens move at block 0's input
            pad = (batch["attention_mask"] == 0)[..., None]  # (B, K, 1)
            changed = {
                **batch,
                "states": torch.where(pad, batch["states"] + 5.0, batch["states"]),
                "actions": torch.where(pad, batch["actions"] - 3.0, batch["actions"]),
                "returns_to_go": torch.where(pad, batch["returns_to_go"] + 7.0, batch["returns_to_go"]),
            }
            tiny_dt(**{k: changed[k] for k in MODEL_INPUTS if k in changed})
            second = seen.pop("hidden")
    finally:
        for handle in handles:
            handle.remove()
    expected = token_mask(batch["attention_mask"])  # (B, 3K)
    moved = (first - second).abs().amax(dim=-1) > 0  # (B, 3K)
    assert torch.equal(moved, ~expected)
    assert torch.equal(seen["mask"] != 0, expected)


def test_prepared_rows_are_three_per_real_timestep(tiny_dt: torch.nn.Module, dt_batches: list[Any]) -> None:
    batch = _padded(dt_batches[1])
    prepared = plugin.eva_prepare_batch(batch=batch, model=tiny_dt, config=EvaConfig(domain="rl"))
    assert prepared is not None and prepared.row_mask is not None
    assert set(prepared.kwargs) == {"states", "actions", "rewards", "returns_to_go", "timesteps", "attention_mask"}
    assert int(prepared.row_mask.sum()) == 3 * int(batch["attention_mask"].sum())
    rows_fn = plugin.eva_layer_rows(name="encoder.h.0.attn.c_attn", module=tiny_dt.encoder.h[0].attn.c_attn)
    assert rows_fn is not None
    hidden = torch.randn(*prepared.row_mask.shape, 32)  # (B, 3K, d)
    rows, mask = rows_fn(hidden, prepared.row_mask)
    assert rows.shape == (hidden.shape[0] * hidden.shape[1], 32) and mask is not None
    assert int(mask.sum()) == 3 * int(batch["attention_mask"].sum())


def test_token_mask_order_on_hand_values() -> None:
    mask = torch.tensor([[0, 1, 1]])
    assert token_mask(mask).tolist() == [[False] * 3 + [True] * 6]


def test_other_batches_pass_to_the_next_plugin(tiny_dt: torch.nn.Module) -> None:
    assert plugin.eva_prepare_batch(batch={"input_ids": torch.ones(1, 2)}, model=tiny_dt, config=EvaConfig()) is None
