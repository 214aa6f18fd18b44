"""``init``: EVA-initialize LoRA adapters on a causal LM, with this domain's defaults."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

import eva_core

from .plugin import DOMAIN

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

    from eva_core import EvaConfig, PluginManager

__all__ = ["init"]


def init(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    config: EvaConfig | None = None,
    lora_config: LoraConfig | None = None,
    plugins: PluginManager | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA adapters on the causal LM ``model`` from the batches of ``loader``.

    The same as ``eva_core.init(model, loader, config, lora_config, domain="llm", **overrides)``: this domain's
    defaults come from the ``llm`` plugin (:data:`eva_llm.plugin.LLM_DEFAULTS`: rank 16, rho 2;
    ``task_type="CAUSAL_LM"``, ``fan_in_fan_out`` for GPT-2 ``Conv1D`` targets), so ``eva_core.init(model,
    loader)`` gives the same adapters.

    Each batch is a dict (``input_ids``, ``attention_mask`` and optionally ``labels``, all (B, T)), as
    :func:`eva_llm.qa_loader` yields. Tokens whose label is -100 (the prompt) and padding are left out of
    the SVD rows, so EVA measures the answer tokens only.

    Args:
        model: a transformers causal LM (not yet a ``PeftModel``); wrapped in place by peft.
        loader: an iterable of batches (a DataLoader, a list).
        config: the EVA settings, used as given (``domain`` is set to ``"llm"`` when it is None); default:
            the domain's.
        lora_config: alpha, dropout... used as given, except that ``fan_in_fan_out`` is switched on when the
            targets include ``Conv1D`` layers; default: the domain's fields with ``lora_alpha = rank``.
        plugins: the plugin manager to ask (default: a fresh :func:`eva_core.plugin_manager`).
        overrides: single :class:`eva_core.EvaConfig` fields, which win over ``config`` and the defaults
            (``rank=8``, ``tau=0.9``).

    Returns:
        the ``PeftModel``; its ``eva_state`` attribute holds the :class:`eva_core.EvaState`.

    Raises:
        eva_core.errors.DomainMismatchError: ``model`` is not a causal LM this domain claims (an encoder, a
            ViT, a Decision Transformer); the message names the package that serves it.
    """
    overrides.setdefault("domain", (config.domain if config is not None else None) or DOMAIN)
    manager = plugins or eva_core.plugin_manager()
    if overrides["domain"] == DOMAIN:
        manager.require_claim(model, DOMAIN)  # before any batch is read or the model is touched
    return eva_core.init(model, loader, config, lora_config, plugins=manager, **overrides)
