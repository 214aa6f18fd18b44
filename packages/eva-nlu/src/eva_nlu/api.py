"""``eva_nlu.init``: EVA for an encoder with this domain's defaults and its head trained in full."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peft import LoraConfig, PeftModel
from torch import nn

import eva_core

from .plugin import head_modules

__all__ = ["DEFAULTS", "default_lora_config", "init"]

DEFAULTS: dict[str, Any] = {"rank": 8, "rho": 2.0, "tau": 0.99, "whiten": False}
"""EVA settings for encoders unless overridden: the budget ``8 * L`` shared with ``rho = 2``, components
stable at cosine 0.99. Every key is an :class:`eva_core.EvaConfig` field."""


def default_lora_config(model: nn.Module, rank: int, **fields: Any) -> LoraConfig:
    """The ``LoraConfig`` this domain trains with: ``lora_alpha = rank`` (scaling 1), no dropout, and, for a
    model with a task head, ``task_type="SEQ_CLS"`` and the head modules in ``modules_to_save``.

    ``fields`` override any ``LoraConfig`` field (``lora_dropout=0.1``, ``use_rslora=True``...).
    """
    heads = head_modules(model)
    base: dict[str, Any] = {"r": rank, "lora_alpha": rank, "lora_dropout": 0.0}
    if heads:
        base.update(task_type="SEQ_CLS", modules_to_save=heads)
    return LoraConfig(**{**base, **fields})


def init(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    lora_config: LoraConfig | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA on the encoder blocks of ``model``; its classification head is trained in full.

    Args:
        model: a transformers encoder (``...ForSequenceClassification`` or a bare ``...Model``) of a
            supported type (BERT/MiniLM, RoBERTa, XLM-R, DeBERTa-v2/v3, MPNet, ELECTRA, DistilBERT).
        loader: batches as a tokenizer gives them (dicts with ``input_ids``, ``attention_mask``, optionally
            ``token_type_ids`` and ``labels``); padding tokens give no rows.
        lora_config: dropout, alpha, ``modules_to_save``...; default :func:`default_lora_config`.
        overrides: :class:`eva_core.EvaConfig` fields replacing :data:`DEFAULTS` (``rank=16``, ``rho=1``...).

    Returns:
        a ``peft.PeftModel``; its ``eva_state`` attribute holds ranks and spectra.
    """
    settings = {**DEFAULTS, "domain": "nlu", **overrides}
    config = lora_config or default_lora_config(model, settings["rank"])
    return eva_core.init(model, loader, lora_config=config, **settings)
