"""``eva_rl.init``: EVA for a Decision Transformer, a thin convenience over :func:`eva_core.init`.

``eva_core.init(model, loader)`` on a ``DecisionTransformerModel`` gives the same: the ``rl`` plugin
supplies the defaults (:data:`eva_rl.plugin.DEFAULT_CONFIG`, :func:`eva_rl.plugin.eva_lora_fields`)
either way; this function only names the domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

import eva_core

from .plugin import DOMAIN

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["init"]


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
        lora_config: alpha, dropout...; default: ``lora_alpha = r``, ``fan_in_fan_out=True`` and the
            embedding and prediction layers in ``modules_to_save`` (:func:`eva_rl.plugin.eva_lora_fields`).
        overrides: :class:`eva_core.EvaConfig` fields replacing the domain's defaults (rank 8, rho
            2: ``rank=4``, ``rho=1``...) and :func:`eva_core.fit`'s keyword arguments.

    Returns:
        a ``peft.PeftModel``; its ``eva_state`` attribute holds ranks and spectra.

    Raises:
        eva_core.errors.DomainMismatchError: ``model`` is not a Decision Transformer (e.g. a GPT-2 language
            model, which eva-llm serves); the message names the package that serves it.
    """
    overrides.setdefault("domain", DOMAIN)
    manager = overrides.pop("plugins", None) or eva_core.plugin_manager()
    if overrides["domain"] == DOMAIN:
        manager.require_claim(model, DOMAIN)  # before any batch is read or the model is touched
    return eva_core.init(model, loader, lora_config=lora_config, plugins=manager, **overrides)
