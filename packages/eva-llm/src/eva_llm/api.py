"""``init``: EVA-initialize LoRA adapters on a causal LM, with this domain's defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from peft import LoraConfig, PeftModel
from torch import nn

import eva_core
from eva_core import EvaConfig
from eva_core.targets import select_modules

from . import architectures

__all__ = ["DOMAIN", "LLM_DEFAULTS", "init", "lora_config_for_model"]

DOMAIN = "llm"
"""The entry-point name of this package's plugin (``EvaConfig.domain``)."""

LLM_DEFAULTS = EvaConfig(rank=16, rho=2.0, tau=0.99, domain=DOMAIN)
"""The EVA settings for LLMs when the caller gives none: average rank 16, a layer may take up to
``2 * 16`` components, converged at cosine 0.99 (as the EVA paper fine-tunes decoder LMs). Every
field can be overridden per call: ``init(model, loader, rank=8)``."""


def init(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    config: EvaConfig | None = None,
    lora_config: LoraConfig | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA adapters on the causal LM ``model`` from the batches of ``loader``.

    Each batch is a dict (``input_ids``, ``attention_mask`` and optionally ``labels``, all (B, T)), as
    :func:`eva_llm.data.qa_loader` yields. Tokens whose label is -100 (the prompt) and padding are left
    out of the SVD rows, so EVA measures the answer tokens only.

    Args:
        model: a transformers causal LM (not yet a ``PeftModel``); wrapped in place by peft.
        loader: an iterable of batches (a DataLoader, a list).
        config: the EVA settings; default :data:`LLM_DEFAULTS`. ``domain`` is set to ``"llm"`` when None.
        lora_config: alpha, dropout... (default ``lora_alpha = rank``, ``task_type="CAUSAL_LM"``);
            ``fan_in_fan_out`` is switched on when the targets include GPT-2 ``Conv1D`` layers.
        overrides: single :class:`EvaConfig` fields, which win over ``config`` (``rank=8``, ``tau=0.9``).

    Returns:
        the ``PeftModel``; its ``eva_state`` attribute holds the :class:`eva_core.EvaState`.
    """
    base = config or LLM_DEFAULTS
    if base.domain is None:
        base = base.replace(domain=DOMAIN)
    resolved = base.replace(**overrides) if overrides else base
    targets = resolved.target_modules
    lora = lora_config_for_model(model, resolved.rank, lora_config, targets=targets)
    return eva_core.init(model, loader, resolved, lora)


def lora_config_for_model(
    model: nn.Module,
    rank: int,
    lora_config: LoraConfig | None = None,
    *,
    targets: Sequence[str] | str | None = None,
) -> LoraConfig:
    """``lora_config`` (default ``LoraConfig(r=rank, lora_alpha=rank, task_type="CAUSAL_LM")``) with
    ``fan_in_fan_out=True`` when the layers ``targets`` selects (default: the decoder projections)
    include a ``Conv1D``, whose weight is stored (d_in, d_out)."""
    base = lora_config or LoraConfig(r=rank, lora_alpha=rank, task_type="CAUSAL_LM")
    names = architectures.target_modules(model) if targets is None else list(select_modules(model, targets))
    if architectures.uses_conv1d(model, names) and not base.fan_in_fan_out:
        base = dataclasses.replace(base, fan_in_fan_out=True)
    return base
