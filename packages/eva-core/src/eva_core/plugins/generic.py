"""The built-in plugin: every ``nn.Linear`` (and the ``nn.Embedding`` layers ``target_modules`` names), and
dict / tuple / tensor batches.

Dict batches are passed as keyword arguments; rows where ``attention_mask`` is 0, or where ``labels``
(same shape) is -100, are left out of the SVD, and ``labels`` are not passed to the model. Tuple and
list batches are passed positionally, a tensor as the only argument. Every hook is ``trylast`` so a
domain plugin's answer wins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..capture.rows import embedding_rows_for, token_rows
from ..contract import PreparedBatch, RowsFn, hookimpl

if TYPE_CHECKING:
    from ..config import EvaConfig

IGNORE_INDEX = -100


@hookimpl(trylast=True)
def eva_default_config(model: nn.Module) -> Mapping[str, Any] | None:
    return {}  # EvaConfig's own defaults


@hookimpl(trylast=True)
def eva_lora_fields(model: nn.Module, targets: Sequence[str]) -> Mapping[str, Any] | None:
    return {}  # peft's LoraConfig defaults


@hookimpl(trylast=True)
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


@hookimpl(trylast=True)
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    if isinstance(module, nn.Embedding):  # token ids: one-hot rows, measured by their counts
        return embedding_rows_for(module)
    return token_rows if isinstance(module, nn.Linear) else None


@hookimpl(trylast=True)
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    if isinstance(batch, torch.Tensor):
        return PreparedBatch(args=(batch,))
    if isinstance(batch, Mapping):
        kwargs = {key: value for key, value in batch.items() if key != "labels"}
        return PreparedBatch(kwargs=kwargs, row_mask=token_mask(batch))
    if isinstance(batch, (tuple, list)):
        return PreparedBatch(args=tuple(batch))
    return None


def token_mask(batch: Mapping[str, Any]) -> torch.Tensor | None:
    """(B, T) bool: ``attention_mask != 0`` and ``labels != -100`` where those are present and (B, T)."""
    mask = None
    attention = batch.get("attention_mask")
    if isinstance(attention, torch.Tensor):
        mask = attention != 0
    labels = batch.get("labels")
    if isinstance(labels, torch.Tensor) and labels.dim() >= 2:
        keep = labels != IGNORE_INDEX
        if mask is None:
            mask = keep
        elif keep.shape == mask.shape:
            mask = mask & keep
    return mask
