"""The ``llm`` eva plugin: decoder-only causal LMs (Llama, Gemma, Qwen2, Mistral, GPT-2...).

It claims causal LMs, targets the projections inside the decoder blocks (never the embeddings or the
LM head) and reads GPT-2's ``Conv1D`` inputs as tokens. Batches are left to eva-core's generic plugin:
a dict batch is passed as keyword arguments, and tokens where ``attention_mask`` is 0 or ``labels`` is
-100 (the prompt and the padding) are left out of the SVD, so only answer tokens are measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from eva_core import hookimpl
from eva_core.capture.rows import token_rows

from . import architectures
from .cli import eva_cli_batches as eva_cli_batches  # `eva fit` hooks
from .cli import eva_cli_load_model as eva_cli_load_model

if TYPE_CHECKING:
    from eva_core import EvaConfig, RowsFn

__all__ = ["eva_claims_model", "eva_layer_rows", "eva_target_modules"]


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    return architectures.is_causal_lm(model)


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return architectures.target_modules(model) or None


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    """Token rows for ``nn.Linear`` and ``Conv1D``: layer_input (B, T, d_in) -> (N = B*T, d_in)."""
    return token_rows if architectures.is_projection(module) else None
