"""``eva_nlu.init``: EVA for an encoder with this domain's defaults and its head trained in full."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

import eva_core

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
    """EVA-initialize LoRA on the encoder blocks of ``model``; its classification head is trained in full.

    The same as ``eva_core.init(model, loader, lora_config=lora_config, domain="nlu", **overrides)``: the
    defaults (rank 8, rho 2, not whitened; the head in ``modules_to_save`` with
    ``task_type="SEQ_CLS"``) are the nlu plugin's (:mod:`eva_nlu.plugin`).

    Args:
        model: a transformers encoder (``...ForSequenceClassification`` or a bare ``...Model``) of a
            supported type (BERT/MiniLM, RoBERTa, XLM-R, DeBERTa-v2/v3, MPNet, ELECTRA, DistilBERT).
        loader: batches as a tokenizer gives them (dicts with ``input_ids``, ``attention_mask``, optionally
            ``token_type_ids`` and ``labels``; :func:`eva_nlu.batches` makes them); padding tokens give no rows.
        lora_config: dropout, alpha, ``modules_to_save``... used as given; default: the domain's fields
            with ``lora_alpha = r``.
        overrides: :class:`eva_core.EvaConfig` fields replacing the defaults (``rank=16``, ``rho=1``...).

    Returns:
        a ``peft.PeftModel``; its ``eva_state`` attribute holds ranks and spectra.

    Raises:
        eva_core.errors.DomainMismatchError: ``model`` is not an encoder this domain claims (a ViT, a causal
            LM, an ALBERT...); the message names the package or ``eva_core.init`` that serves it.
    """
    overrides.setdefault("domain", "nlu")
    manager = overrides.pop("plugins", None) or eva_core.plugin_manager()
    if overrides["domain"] == "nlu":
        manager.require_claim(model, "nlu")  # before any batch is read or the model is touched
    return eva_core.init(model, loader, lora_config=lora_config, plugins=manager, **overrides)
