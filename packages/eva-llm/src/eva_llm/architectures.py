"""Which models are decoder-only causal LMs, and which of their layers EVA adapts.

A causal LM is a stack of identical decoder blocks (``model.layers`` in Llama, Gemma, Qwen2 and
Mistral; ``transformer.h`` in GPT-2) between a token embedding and an LM head. The default targets are
the projections inside those blocks: attention ``q/k/v/o`` and MLP ``gate/up/down`` (``nn.Linear``),
or GPT-2's ``c_attn``, ``c_proj`` and ``c_fc`` (transformers' ``Conv1D``). The embeddings, the LM head
and anything else outside the blocks (a vision tower, a multimodal projector) are never targeted.

Nothing here imports transformers: a model that holds a ``Conv1D`` has already imported it.
"""

from __future__ import annotations

import sys

from torch import nn

__all__ = [
    "CAUSAL_LM_TYPES",
    "NOT_CAUSAL_LM_TYPES",
    "conv1d_class",
    "decoder_blocks",
    "is_causal_lm",
    "is_projection",
    "target_modules",
    "uses_conv1d",
]

CAUSAL_LM_TYPES: frozenset[str] = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3_text",
        "gpt2",
        "phi",
        "phi3",
        "olmo",
        "olmo2",
        "granite",
        "starcoder2",
        "smollm3",
    }
)
"""``config.model_type`` values claimed outright (the architectures tested here are llama, gemma3_text,
qwen2, mistral and gpt2)."""

NOT_CAUSAL_LM_TYPES: frozenset[str] = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "camembert",
        "electra",
        "deberta",
        "deberta-v2",
        "distilbert",
        "albert",
        "mpnet",
        "decision_transformer",
    }
)
"""Model types other domains own even when loaded with a causal LM head (e.g. ``BertLMHeadModel``)."""

_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_NOT_IN_DECODER = ("vision", "visual", "image", "audio")


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` is a decoder-only transformers language model (with or without its LM head).

    Claimed: a known ``config.model_type`` (:data:`CAUSAL_LM_TYPES`), or a class named ``*ForCausalLM`` /
    ``*LMHeadModel`` that is not an encoder-decoder and not a type another domain owns. A model that
    already carries adapters (a ``PeftModel``) is not claimed: EVA fits the base model.
    """
    config = getattr(model, "config", None)
    if config is None or hasattr(model, "peft_config"):
        return False
    model_type = getattr(config, "model_type", None)
    if model_type in CAUSAL_LM_TYPES:
        return True
    if model_type in NOT_CAUSAL_LM_TYPES or getattr(config, "is_encoder_decoder", False):
        return False
    return type(model).__name__.endswith(_CAUSAL_SUFFIXES)


def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` if transformers is imported, else None (then no model can hold one)."""
    utils = sys.modules.get("transformers.pytorch_utils")
    return getattr(utils, "Conv1D", None)


def is_projection(module: nn.Module) -> bool:
    """An ``nn.Linear`` or a transformers ``Conv1D`` (GPT-2's linear layer with a transposed weight)."""
    conv1d = conv1d_class()
    return isinstance(module, nn.Linear) or (conv1d is not None and isinstance(module, conv1d))


def uses_conv1d(model: nn.Module, targets: list[str] | None = None) -> bool:
    """Whether any of ``targets`` (default: :func:`target_modules`) is a ``Conv1D``; peft then needs
    ``LoraConfig(fan_in_fan_out=True)``."""
    conv1d = conv1d_class()
    if conv1d is None:
        return False
    modules = dict(model.named_modules())
    names = target_modules(model) if targets is None else targets
    return any(isinstance(modules.get(name), conv1d) for name in names)


def decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The name and the ``nn.ModuleList`` of the decoder blocks: the longest list of modules of one class
    outside vision/audio towers (``model.layers``, ``transformer.h``...), or None if there is none."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if any(word in name.lower() for word in _NOT_IN_DECODER):
            continue
        if len({type(block) for block in module}) != 1:
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    return best


def target_modules(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of every ``nn.Linear`` / ``Conv1D`` inside the decoder
    blocks of the base model (before adapters are added), in model order; empty when the model has no
    recognisable block list."""
    found = decoder_blocks(model)
    if found is None:
        return []
    prefix, blocks = found
    return [
        f"{prefix}.{name}"
        for name, module in blocks.named_modules()
        if name and is_projection(module) and not any(word in name.lower() for word in _NOT_IN_DECODER)
    ]
