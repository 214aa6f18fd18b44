"""Which encoders this domain claims, which of their layers EVA adapts and which modules are the head.

Targets: every ``nn.Linear`` inside the encoder blocks (``<backbone>.encoder.layer.<i>.`` or
DistilBERT's ``transformer.layer.<i>.``): the attention projections, the attention output, the
intermediate and the output dense layers. Never the embeddings, the pooler or the classification head,
nor DeBERTa's unshared ``pos_{key,query}_proj`` (they see relative-position embeddings, not tokens).
The head (the model's top-level children outside ``base_model_prefix``) is trained in full.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["ENCODER_TYPES", "claims", "head_modules", "is_shared_position_projection", "target_modules"]

ENCODER_TYPES: frozenset[str] = frozenset(
    {"bert", "roberta", "xlm-roberta", "camembert", "deberta", "deberta-v2", "mpnet", "electra", "distilbert"}
)
"""``config.model_type`` values this domain claims."""

_BLOCK = re.compile(r"(^|\.)(encoder|transformer)\.layer\.\d+\.")
_RELATIVE_POSITION = re.compile(r"(^|\.)pos_(key|query)_proj$")  # DeBERTa v1/v2 (unshared) position projections
_SHARED_POSITION = re.compile(r"\.(query_proj|key_proj|in_proj)$")  # DeBERTa projections also fed the positions


def claims(model: nn.Module) -> bool:
    """Whether ``model`` is an encoder of :data:`ENCODER_TYPES` (``config.model_type``), not a decoder."""
    config = getattr(model, "config", None)
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
    ``pooler``, DistilBERT's ``pre_classifier``): trained in full, never EVA-initialized. None for a bare
    encoder (``BertModel``...), which is the backbone itself."""
    backbone = getattr(model, "base_model_prefix", None)
    children = dict(model.named_children())
    if backbone not in children:
        return []
    return [name for name, child in children.items() if name != backbone and any(True for _ in child.parameters())]


def is_shared_position_projection(name: str, module: nn.Module) -> bool:
    """Whether layer ``name`` is a DeBERTa query/key projection, which is called on the tokens and again on
    the relative-position embeddings (see :func:`eva_nlu.batches.token_rows_skipping_positions`)."""
    return isinstance(module, nn.Linear) and bool(_SHARED_POSITION.search(name))
