"""The ``nlu`` eva plugin: which layers of an encoder EVA adapts, and which of their input rows count.

Targets: every ``nn.Linear`` inside the encoder blocks (``<backbone>.encoder.layer.<i>.`` or
DistilBERT's ``transformer.layer.<i>.``): the attention projections, the attention output, the
intermediate and the output dense layers. Never the embeddings, the pooler or the classification head.
Rows: one per non-padding token (the generic plugin's ``attention_mask`` masking). DeBERTa-v2/v3 also
feeds its shared query/key projections the relative-position embeddings; those calls give no rows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from eva_core import PreparedBatch, RowsFn, hookimpl
from eva_core.capture.rows import token_rows

from .cli import eva_cli_batches as eva_cli_batches  # `eva fit` hooks
from .cli import eva_cli_load_model as eva_cli_load_model

if TYPE_CHECKING:
    from eva_core import EvaConfig

__all__ = ["ENCODER_TYPES", "head_modules", "target_modules"]

ENCODER_TYPES: frozenset[str] = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "deberta", "deberta-v2", "mpnet", "electra", "distilbert"}
)
"""``config.model_type`` values this plugin claims."""

_BLOCK = re.compile(r"(^|\.)(encoder|transformer)\.layer\.\d+\.")
_RELATIVE_POSITION = re.compile(r"(^|\.)pos_(key|query)_proj$")  # DeBERTa v1/v2 (unshared) position projections
_SHARED_POSITION = re.compile(r"\.(query_proj|key_proj|in_proj)$")
_MODEL_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids"})


def _config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    config = _config(model)
    return bool(
        config is not None
        and getattr(config, "model_type", None) in ENCODER_TYPES
        and not getattr(config, "is_decoder", False)
    )


def target_modules(model: nn.Module) -> list[str]:
    """Names of the encoder blocks' linear layers, in model order (the defaults of this domain)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _BLOCK.search(name) and not _RELATIVE_POSITION.search(name)
    ]


def head_modules(model: nn.Module) -> list[str]:
    """Top-level modules outside the pretrained backbone that hold parameters (``classifier``, DeBERTa's
    ``pooler``, DistilBERT's ``pre_classifier``): trained in full, never EVA-initialized."""
    backbone = getattr(model, "base_model_prefix", None)
    return [
        name for name, child in model.named_children() if name != backbone and any(True for _ in child.parameters())
    ]


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return target_modules(model) or None


@hookimpl
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    """Dict batches (tokenizer output, with or without ``labels``): keyword arguments without
    ``labels``, and a token mask from ``attention_mask`` (all tokens when there is none)."""
    if not isinstance(batch, Mapping) or not isinstance(batch.get("input_ids"), torch.Tensor):
        return None
    input_ids = batch["input_ids"]
    attention = batch.get("attention_mask")
    mask = attention != 0 if isinstance(attention, torch.Tensor) else torch.ones_like(input_ids, dtype=torch.bool)
    kwargs = {key: value for key, value in batch.items() if key in _MODEL_INPUTS}
    return PreparedBatch(kwargs=kwargs, row_mask=mask)


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    if isinstance(module, nn.Linear) and _SHARED_POSITION.search(name):
        return token_rows_skipping_positions
    return None  # the generic plugin's token rows


def token_rows_skipping_positions(
    layer_input: torch.Tensor, row_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token rows of a DeBERTa query/key projection; its call on the relative-position embeddings
    ((1, 2k, d_in), which does not line up with the (B, T) token mask) gives rows that are all masked out.

    The call is recognised by shape alone, so in the one ambiguous case (a batch of a single sequence of
    exactly 2k tokens) the position embeddings are counted as tokens; :func:`eva_prepare_batch` always
    provides the mask this test needs.

    Args:
        layer_input: (B, T, d_in) hidden states, or (1, 2k, d_in) position embeddings.
        row_mask: (B, T) bool or None.

    Returns:
        rows (N, d_in) and mask (N,) (all False for position embeddings).
    """
    if row_mask is not None and tuple(layer_input.shape[:-1]) != tuple(row_mask.shape):
        rows = layer_input.reshape(-1, layer_input.shape[-1])  # (N, d_in)
        return rows, torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    return token_rows(layer_input, row_mask)
