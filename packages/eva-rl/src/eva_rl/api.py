"""``eva_rl.init``: EVA for a Decision Transformer, with this domain's defaults."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peft import LoraConfig, PeftModel
from torch import nn

import eva_core

from . import architectures

__all__ = ["DEFAULTS", "DOMAIN", "default_lora_config", "init"]

DOMAIN = "rl"
"""The entry-point name of this package's plugin (``EvaConfig.domain``)."""

DEFAULTS: dict[str, Any] = {"rank": 8, "rho": 2.0, "tau": 0.99}
"""EVA settings for Decision Transformers unless overridden: average rank 8 (the models here are small,
hidden size 128, so rank 8 already spans a sixteenth of each layer's input), a layer may take up to
``2 * 8`` components, components stable at cosine 0.99. Every key is an :class:`eva_core.EvaConfig` field."""


def default_lora_config(model: nn.Module, rank: int, **fields: Any) -> LoraConfig:
    """The ``LoraConfig`` this domain trains with: ``lora_alpha = rank`` (scaling 1), no dropout,
    ``fan_in_fan_out=True`` (GPT-2 ``Conv1D`` stores its weight (d_in, d_out)) and the embedding and
    prediction layers (:data:`eva_rl.architectures.MODULES_TO_SAVE`) in ``modules_to_save``.

    ``fields`` override any ``LoraConfig`` field (``lora_dropout=0.1``, ``use_rslora=True``...).
    """
    base: dict[str, Any] = {
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "fan_in_fan_out": True,
        "modules_to_save": architectures.modules_to_save(model),
    }
    return LoraConfig(**{**base, **fields})


def init(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    lora_config: LoraConfig | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA on the GPT-2 blocks of a Decision Transformer from trajectory batches.

    Args:
        model: a transformers ``DecisionTransformerModel`` (not yet a ``PeftModel``); wrapped in place.
        loader: batches as :func:`eva_rl.trajectory_batches` yields them (dicts with ``states``,
            ``actions``, ``returns_to_go``, ``timesteps``, ``attention_mask``); padded timesteps give no rows.
        lora_config: alpha, dropout, ``modules_to_save``...; default :func:`default_lora_config`.
        overrides: :class:`eva_core.EvaConfig` fields replacing :data:`DEFAULTS` (``rank=4``, ``rho=1``...).

    Returns:
        a ``peft.PeftModel``; its ``eva_state`` attribute holds ranks and spectra.
    """
    settings = {**DEFAULTS, "domain": DOMAIN, **overrides}
    config = lora_config or default_lora_config(model, settings["rank"])
    return eva_core.init(model, loader, lora_config=config, **settings)
