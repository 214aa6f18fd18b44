"""Which models are Decision Transformers, and which of their layers EVA adapts.

A transformers ``DecisionTransformerModel`` embeds each timestep's return-to-go, state and action with
its own layer (``embed_return``, ``embed_state``, ``embed_action``, plus ``embed_timestep`` and
``embed_ln``), runs the 3T interleaved tokens through a GPT-2 stack (``encoder.h``, whose linear layers
are transformers ``Conv1D``: ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) and reads
actions off the state tokens with ``predict_action``. EVA adapts the GPT-2 projections; the small
embedding and prediction layers are task specific (a new task has new state/return scales) and are
trained in full (:data:`MODULES_TO_SAVE`).

Nothing here imports transformers: a model holding a ``Conv1D`` has already imported it.
"""

from __future__ import annotations

import sys

from torch import nn

__all__ = [
    "BLOCKS",
    "DT_MODEL_TYPE",
    "MODULES_TO_SAVE",
    "is_conv1d",
    "is_decision_transformer",
    "is_projection",
    "modules_to_save",
    "target_modules",
]

DT_MODEL_TYPE = "decision_transformer"
"""``config.model_type`` of transformers' ``DecisionTransformerModel``."""

BLOCKS = "encoder.h"
"""Name of the ``nn.ModuleList`` of GPT-2 blocks inside a ``DecisionTransformerModel``."""

MODULES_TO_SAVE: tuple[str, ...] = (
    "embed_timestep",
    "embed_return",
    "embed_state",
    "embed_action",
    "embed_ln",
    "predict_state",
    "predict_action",
    "predict_return",
)
"""The per-modality input and output layers, trained in full next to the adapters."""


def is_decision_transformer(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``DecisionTransformerModel`` without adapters.

    Claimed by ``config.model_type == "decision_transformer"``; GPT-2 language models (``gpt2``), which
    share the block layout, are not. A ``PeftModel`` is not claimed: EVA fits the base model.
    """
    config = getattr(model, "config", None)
    if config is None or hasattr(model, "peft_config"):
        return False
    return getattr(config, "model_type", None) == DT_MODEL_TYPE


def is_conv1d(module: nn.Module | None) -> bool:
    """A transformers ``Conv1D`` (GPT-2's linear layer, weight stored (d_in, d_out))."""
    utils = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(utils, "Conv1D", None)
    return conv1d is not None and isinstance(module, conv1d)


def is_projection(module: nn.Module) -> bool:
    """An ``nn.Linear`` or a transformers ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def target_modules(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of every projection inside the GPT-2 blocks, in model
    order (``encoder.h.0.attn.c_attn``, ``encoder.h.0.attn.c_proj``, ``encoder.h.0.mlp.c_fc``...); empty
    when the model has no ``encoder.h``."""
    blocks = dict(model.named_modules()).get(BLOCKS)
    if not isinstance(blocks, nn.ModuleList):
        return []
    return [f"{BLOCKS}.{name}" for name, module in blocks.named_modules() if name and is_projection(module)]


def modules_to_save(model: nn.Module) -> list[str]:
    """The names of :data:`MODULES_TO_SAVE` that ``model`` has (top-level children)."""
    children = dict(model.named_children())
    return [name for name in MODULES_TO_SAVE if name in children]
