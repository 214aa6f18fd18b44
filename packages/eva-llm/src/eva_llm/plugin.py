"""The ``llm`` eva plugin: decoder-only causal LMs (Llama, Gemma, Qwen2, Mistral, GPT-2...).

It claims causal LMs, targets the projections inside the decoder blocks (never the embeddings or the
LM head), reads GPT-2's ``Conv1D`` inputs as tokens, and states this domain's defaults once: the EVA
settings (:data:`LLM_DEFAULTS`) and the ``LoraConfig`` fields (``task_type="CAUSAL_LM"``,
``fan_in_fan_out`` for ``Conv1D`` targets). Batches are left to eva-core's generic plugin: a dict batch
is passed as keyword arguments, and tokens where ``attention_mask`` is 0 or ``labels`` is -100 (the
prompt and the padding) are left out of the SVD, so only answer tokens are measured.

The ``eva-lora fit`` hooks load the :data:`eva_llm.cli.MODEL_ALIASES` checkpoints (or a local folder) and read
question/answer JSON lines (:mod:`eva_llm.cli`); ``eva-lora plan`` builds the model from its ``config.json``
alone, on the meta device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from eva_core import hookimpl
from eva_core.capture.rows import token_rows

from . import architectures, cli

if TYPE_CHECKING:
    from eva_core import EvaConfig, LoadedModel, RowsFn

__all__ = [
    "DOMAIN",
    "LLM_DEFAULTS",
    "eva_claims_model",
    "eva_cli_batches",
    "eva_cli_example",
    "eva_cli_load_model",
    "eva_default_config",
    "eva_layer_rows",
    "eva_lora_fields",
    "eva_target_modules",
]

DOMAIN = "llm"
"""The entry-point name of this plugin (``EvaConfig.domain``)."""

LLM_DEFAULTS: Mapping[str, Any] = {"rank": 16, "rho": 2.0}
"""The EVA settings for causal LMs when the caller gives no ``config``: average rank 16, a layer may take up
to ``2 * 16`` components (as the EVA paper fine-tunes decoder LMs), each layer measured until eva-core's
default stopping rule (its estimated subspace error within ``target_error``) is met. Keyword
overrides win: ``eva_llm.init(model, loader, rank=8)``."""


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    return architectures.is_causal_lm(model)


@hookimpl
def eva_default_config(model: nn.Module) -> Mapping[str, Any] | None:
    return dict(LLM_DEFAULTS)


@hookimpl
def eva_lora_fields(model: nn.Module, targets: Sequence[str]) -> Mapping[str, Any] | None:
    """``task_type="CAUSAL_LM"``, and ``fan_in_fan_out=True`` when a target is a ``Conv1D`` (its weight is
    stored (d_in, d_out))."""
    fields: dict[str, Any] = {"task_type": "CAUSAL_LM"}
    if architectures.uses_conv1d(model, list(targets)):
        fields["fan_in_fan_out"] = True
    return fields


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return architectures.target_modules(model) or None


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    """Token rows for ``nn.Linear`` and ``Conv1D``: layer_input (B, T, d_in) -> (N = B*T, d_in)."""
    return token_rows if architectures.is_projection(module) else None


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    return cli.load_model(model)


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    return cli.batches(data, loaded, batch_size, rows, options)


@hookimpl
def eva_cli_example(
    model: str, batch_size: int, length: int, options: Mapping[str, str]
) -> tuple[nn.Module, Any] | None:
    return cli.example(model, batch_size, length)
