"""The ``rl`` eva plugin: transformers ``DecisionTransformerModel`` on trajectory batches.

It claims Decision Transformers (never GPT-2 language models, which eva-llm owns), targets the GPT-2
``Conv1D`` projections of ``encoder.h`` (never the ``embed_*`` / ``predict_*`` layers, which are trained in
full) and reads their inputs as tokens: each layer sees (B, 3T, d_in), one row per return/state/action
token, padded timesteps excluded (:mod:`eva_rl.batches`). The ``eva-lora fit`` hooks are :mod:`eva_rl.cli`'s.
This module states the domain's defaults, once: :data:`DEFAULT_CONFIG` and :func:`eva_lora_fields`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from torch import nn

from eva_core import PreparedBatch, hookimpl
from eva_core.capture.rows import token_rows

from . import architectures, batches
from .cli import eva_cli_batches as eva_cli_batches  # `eva-lora fit` hooks
from .cli import eva_cli_load_model as eva_cli_load_model

if TYPE_CHECKING:
    from eva_core import EvaConfig, RowsFn

__all__ = [
    "DEFAULT_CONFIG",
    "DOMAIN",
    "eva_claims_model",
    "eva_default_config",
    "eva_layer_rows",
    "eva_lora_fields",
    "eva_prepare_batch",
    "eva_target_modules",
]

DOMAIN = "rl"
"""The entry-point name of this plugin (``EvaConfig.domain``)."""

DEFAULT_CONFIG: Mapping[str, Any] = MappingProxyType({"rank": 8, "rho": 2.0})
"""EVA settings for Decision Transformers unless overridden: average rank 8 (the models are small, hidden
size 128, so rank 8 already spans a sixteenth of each layer's input), a layer may take up to ``2 * 8``
components, components stable at cosine 0.99; not whitened."""


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    return architectures.is_decision_transformer(model)


@hookimpl
def eva_default_config(model: nn.Module) -> Mapping[str, Any] | None:
    """:data:`DEFAULT_CONFIG`."""
    return dict(DEFAULT_CONFIG)


@hookimpl
def eva_lora_fields(model: nn.Module, targets: Sequence[str]) -> Mapping[str, Any] | None:
    """``fan_in_fan_out=True`` when a target is a GPT-2 ``Conv1D`` (it stores its weight (d_in, d_out):
    every default target does) and the embedding and prediction layers of ``model`` in ``modules_to_save``
    (trained in full: a new task has new state and return scales)."""
    modules = dict(model.named_modules())
    fields: dict[str, Any] = {}
    if any(architectures.is_conv1d(modules.get(name)) for name in targets):
        fields["fan_in_fan_out"] = True
    heads = [name for name in architectures.modules_to_save(model) if name not in targets]
    if heads:
        fields["modules_to_save"] = heads
    return fields


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return architectures.target_modules(model) or None


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    """Token rows for ``Conv1D`` / ``nn.Linear``: layer_input (B, 3T, d_in) -> (N = B*3T, d_in)."""
    return token_rows if architectures.is_projection(module) else None


@hookimpl
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    """A trajectory dict -> model kwargs and the (B, 3T) token mask (:func:`eva_rl.batches.prepare_batch`);
    anything else passes on (None)."""
    return batches.prepare_batch(batch)
