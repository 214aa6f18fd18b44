"""The ``nlu`` eva plugin: the hooks through which eva-core serves encoders.

Claims BERT-family encoders (:mod:`eva_nlu.architectures`); targets the linear layers of the encoder
blocks; rows are the non-padding tokens (:mod:`eva_nlu.batches`; DeBERTa's calls of its query/key
projections on the relative-position embeddings give none); the head is trained in full. This module
states the domain's defaults once (:data:`DEFAULT_CONFIG`, :func:`eva_lora_fields`); ``eva_core.init``,
``eva_nlu.init`` and ``eva-lora fit`` all take them from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from torch import nn

from eva_core import PreparedBatch, RowsFn, hookimpl

from .architectures import claims, head_modules, is_shared_position_projection, target_modules
from .batches import prepare_batch, token_rows_skipping_positions
from .cli import eva_cli_batches as eva_cli_batches  # `eva-lora fit` hooks
from .cli import eva_cli_load_model as eva_cli_load_model

if TYPE_CHECKING:
    from eva_core import EvaConfig

__all__ = ["DEFAULT_CONFIG"]

DEFAULT_CONFIG: Mapping[str, Any] = MappingProxyType({"rank": 8, "rho": 2.0, "whiten": False})
"""EVA settings for encoders unless overridden: the budget ``8 * L`` shared with ``rho = 2``, components
stable at cosine 0.99, not whitened. Every key is an :class:`eva_core.EvaConfig` field."""


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    return claims(model)


@hookimpl
def eva_default_config(model: nn.Module) -> Mapping[str, Any] | None:
    return DEFAULT_CONFIG


@hookimpl
def eva_lora_fields(model: nn.Module, targets: Sequence[str]) -> Mapping[str, Any] | None:
    """For a model with a task head: ``task_type="SEQ_CLS"`` and the head in ``modules_to_save``
    (trained in full); nothing for a bare encoder."""
    heads = head_modules(model)
    return {"task_type": "SEQ_CLS", "modules_to_save": heads} if heads else {}


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return target_modules(model) or None


@hookimpl
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    """Dict batches (tokenizer output, with or without ``labels``): keyword arguments without
    ``labels``, and a token mask from ``attention_mask`` (all tokens when there is none)."""
    return prepare_batch(batch)


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    if is_shared_position_projection(name, module):
        return token_rows_skipping_positions
    return None  # the generic plugin's token rows
