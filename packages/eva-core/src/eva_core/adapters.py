"""``apply``: turn an :class:`EvaState` into a standard peft LoRA model."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import InvalidConfigError
from .state import EvaState

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["apply", "lora_config_for"]


def lora_config_for(state: EvaState, lora_config: LoraConfig | None = None) -> LoraConfig:
    """The ``LoraConfig`` that realises ``state``: only layers with rank > 0 targeted, per-layer ranks in
    ``rank_pattern`` and, for ranks other than ``r``, ``alpha_pattern`` set so the LoRA scaling stays what
    ``lora_config`` configures: ``alpha_l / r_l = alpha / r`` (``alpha_l / sqrt(r_l) = alpha / sqrt(r)``
    under rsLoRA). ``r`` is ``state.config.rank``; the default alpha equals it (scaling 1).
    """
    from peft import LoraConfig  # peft (and transformers) load on first use: `import eva_core` stays light

    base = lora_config or LoraConfig(r=state.config.rank, lora_alpha=state.config.rank)
    if not isinstance(base, LoraConfig):
        raise InvalidConfigError(f"lora_config={base!r} must be a peft.LoraConfig or None.")
    rank = state.config.rank
    alpha: float = base.lora_alpha * (rank / base.r if not base.use_rslora else math.sqrt(rank / base.r))
    kept = [name for name, r in state.ranks.items() if r > 0]
    if not kept:
        raise InvalidConfigError("every layer of the EvaState has rank 0; fit with a larger rank or other targets.")
    rank_pattern = {_exact(name): r for name, r in state.ranks.items() if r > 0 and r != rank}
    alpha_pattern = {
        _exact(name): alpha * _alpha_factor(r, rank, base.use_rslora)
        for name in kept
        if (r := state.ranks[name]) != rank
    }
    return dataclasses.replace(
        base,
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int but takes any number
        target_modules="(" + "|".join(_exact(name) for name in kept) + ")$",
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        init_lora_weights=True,
    )


@torch.no_grad()
def apply(
    model: nn.Module, state: EvaState, lora_config: LoraConfig | None = None, adapter_name: str = "default"
) -> PeftModel:
    """Wrap ``model`` in a peft LoRA model whose ``lora_A`` rows are the EVA components and ``lora_B = 0``.

    The base weights are untouched, so the output at step 0 equals the base model's. Layers of rank 0
    get no adapter. The result saves with ``save_pretrained`` and loads with plain
    ``peft.PeftModel.from_pretrained``, with nothing of eva installed.

    Args:
        model: the model ``state`` was fitted on (not yet a ``PeftModel``).
        state: from :func:`eva_core.fit` or :meth:`EvaState.load`.
        lora_config: dropout, bias, rsLoRA, ``modules_to_save``... are taken from it; ``r``,
            ``target_modules`` and the patterns are set from ``state``.
    """
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise InvalidConfigError(
            "apply(model=...) got a PeftModel; pass the base model (model.get_base_model() or a fresh load)."
        )
    config = lora_config_for(state, lora_config)
    peft_model = get_peft_model(model, config, adapter_name=adapter_name)
    modules = dict(peft_model.get_base_model().named_modules())
    for name, rank in state.ranks.items():
        if rank == 0:
            continue
        layer = modules[name]
        weight_a = layer.lora_A[adapter_name].weight  # (r_l, d_in), or (r_l, C_in, k_h, k_w) for a conv
        rows = state.components(name).to(device=weight_a.device, dtype=weight_a.dtype)  # (r_l, d_in)
        if weight_a.dim() > 2 and rows.dim() == 2 and rows.shape[1] == weight_a[0].numel():
            # a conv's A is (r_l, C_in, *kernel); rows of unfolded patches are flattened in that order
            rows = rows.reshape(weight_a.shape)
        if tuple(rows.shape) != tuple(weight_a.shape):
            raise InvalidConfigError(
                f"layer {name!r}: the state holds components of shape {tuple(rows.shape)} but the LoRA A matrix is "
                f"{tuple(weight_a.shape)}; was the state fitted on a different model?"
            )
        weight_a.copy_(rows)
        layer.lora_B[adapter_name].weight.zero_()
    return peft_model


def _alpha_factor(layer_rank: int, rank: int, rslora: bool) -> float:
    return math.sqrt(layer_rank / rank) if rslora else layer_rank / rank


def _exact(name: str) -> str:
    """A pattern matching exactly ``name``: peft matches pattern keys as suffixes, so anchor them."""
    return "^" + re.escape(name)
