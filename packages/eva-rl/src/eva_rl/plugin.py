"""The ``rl`` eva plugin: transformers ``DecisionTransformerModel`` on trajectory batches.

It claims Decision Transformers (never GPT-2 language models, which eva-llm owns), targets the GPT-2
``Conv1D`` projections of ``encoder.h`` (never the ``embed_*`` / ``predict_*`` layers) and reads their
inputs as tokens: each layer sees (B, 3T, d_in), one row per return/state/action token. Dict batches
with ``states``, ``actions``, ``returns_to_go``, ``timesteps`` and ``attention_mask`` become model
keyword arguments; the (B, T) mask is expanded to the (B, 3T) token mask (:func:`eva_rl.tokens.token_mask`)
so padded timesteps give no rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from eva_core import PreparedBatch, hookimpl
from eva_core.capture.rows import token_rows

from . import architectures
from .cli import eva_cli_batches as eva_cli_batches  # `eva fit` hooks
from .cli import eva_cli_load_model as eva_cli_load_model
from .tokens import token_mask

if TYPE_CHECKING:
    from eva_core import EvaConfig, RowsFn

__all__ = ["MODEL_INPUTS", "eva_claims_model", "eva_layer_rows", "eva_prepare_batch", "eva_target_modules"]

MODEL_INPUTS: tuple[str, ...] = ("states", "actions", "rewards", "returns_to_go", "timesteps", "attention_mask")
"""Batch keys passed to ``DecisionTransformerModel.forward`` (``rewards`` is optional; others are dropped)."""

_REQUIRED = ("states", "actions", "returns_to_go", "timesteps")


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    return architectures.is_decision_transformer(model)


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return architectures.target_modules(model) or None


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    """Token rows for ``Conv1D`` / ``nn.Linear``: layer_input (B, 3T, d_in) -> (N = B*3T, d_in)."""
    return token_rows if architectures.is_projection(module) else None


@hookimpl
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    """A trajectory dict -> model kwargs and the (B, 3T) token mask; anything else passes on (None).

    ``states`` (B, T, d_s), ``actions`` (B, T, d_a), ``returns_to_go`` (B, T, 1), ``timesteps`` (B, T) and
    optionally ``attention_mask`` (B, T) (all timesteps count when absent) and ``rewards`` (B, T, 1).
    """
    if not isinstance(batch, Mapping) or not all(key in batch for key in _REQUIRED):
        return None
    kwargs = {key: batch[key] for key in MODEL_INPUTS if key in batch}
    attention = batch.get("attention_mask")
    mask = token_mask(attention) if isinstance(attention, torch.Tensor) else None  # (B, 3T)
    return PreparedBatch(kwargs=kwargs, row_mask=mask)
