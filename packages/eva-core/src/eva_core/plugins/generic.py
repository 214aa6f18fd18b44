"""The built-in plugin: every ``nn.Linear`` outside the output heads (and the ``nn.Embedding`` layers
``target_modules`` names), and dict / tuple / tensor batches.

Targets: every ``nn.Linear`` except the model's output heads, as peft's ``target_modules="all-linear"``
leaves them out: the output embeddings (``get_output_embeddings()``, an LM head's decoder) and, for a
model built as a backbone plus heads (transformers' ``base_model_prefix`` names the backbone child), the
task heads: the top-level children beside the backbone that do not hold the output embeddings (a freshly
initialized classifier). Task heads go to ``modules_to_save`` and are trained in full. A plain
``nn.Module`` has no heads this plugin can tell apart, so every ``nn.Linear`` is targeted.

Dict batches are passed as keyword arguments; rows where ``attention_mask`` is 0, or where ``labels``
(same shape) equal ``EvaConfig.label_mask_value`` (-100; unless ``use_label_mask=False``), are left out
of the SVD, and ``labels`` are not passed to the model. Tuple and list batches are passed positionally, a
tensor as the only argument. Every hook is ``trylast`` so a domain plugin's answer wins.
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
    """The task heads (:func:`task_heads`) that hold no adapted layer, in ``modules_to_save``; else
    peft's ``LoraConfig`` defaults."""
    saved = [head for head in task_heads(model) if not any(_within(name, head) for name in targets)]
    return {"modules_to_save": saved} if saved else {}


@hookimpl(trylast=True)
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    """Every ``nn.Linear`` outside :func:`output_heads`, in model order."""
    heads = output_heads(model)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(_within(name, head) for head in heads)
    ]


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
        masked = config.label_mask_value if config.use_label_mask else None
        return PreparedBatch(kwargs=kwargs, row_mask=token_mask(batch, masked))
    if isinstance(batch, (tuple, list)):
        return PreparedBatch(args=tuple(batch))
    return None


def token_mask(batch: Mapping[str, Any], label_mask_value: int | None = IGNORE_INDEX) -> torch.Tensor | None:
    """(B, T) bool: ``attention_mask != 0`` and ``labels != label_mask_value`` where those are present and
    (B, T); ``label_mask_value=None`` ignores the labels (peft's ``use_label_mask=False``)."""
    mask = None
    attention = batch.get("attention_mask")
    if isinstance(attention, torch.Tensor):
        mask = attention != 0
    labels = batch.get("labels")
    if label_mask_value is not None and isinstance(labels, torch.Tensor) and labels.dim() >= 2:
        keep = labels != label_mask_value
        if mask is None:
            mask = keep
        elif keep.shape == mask.shape:
            mask = mask & keep
    return mask


def output_heads(model: nn.Module) -> list[str]:
    """Names of the modules the generic targets leave out: the :func:`task_heads` and the output
    embeddings (an LM head's decoder; the rest of an LM head, e.g. a pretrained transform, stays a target,
    as with peft's ``all-linear``)."""
    heads = task_heads(model)
    embeddings = _output_embeddings(model)
    return heads if embeddings is None else [*heads, embeddings]


def task_heads(model: nn.Module) -> list[str]:
    """The heads beside the backbone that do not hold the output embeddings: task heads (a classifier,
    freshly initialized for the task), to be trained in full rather than adapted."""
    embeddings = _output_embeddings(model)
    return [head for head in _heads_beside_backbone(model) if embeddings is None or not _within(embeddings, head)]


def fallback_message(model: nn.Module, targets: Sequence[str], domains: Sequence[str], reason: str | None) -> str:
    """What the ``GenericFallbackWarning`` says: why this plugin chose the ``targets`` of ``model`` (``reason``,
    or that none of the installed ``domains`` knows it), what it left out, and how to choose instead."""
    kind = type(model).__name__
    why = reason or f"no installed eva domain ({', '.join(domains) if domains else 'none installed'}) knows it"
    heads = output_heads(model)
    left = f"outside its output heads {heads}" if heads else "(no output head recognised)"
    return (
        f"{kind}: {why}, so eva-core's generic plugin chose the layers: every nn.Linear {left}, {len(targets)} in "
        "all. Pass target_modules=[...] to choose them yourself (which also silences this warning), or install "
        "the eva domain package for this kind of model."
    )


def from_a_model_library(model: nn.Module) -> bool:
    """Whether ``model`` comes from a model library (a transformers ``config`` / ``base_model_prefix``, a
    timm ``pretrained_cfg``), for which a domain package may exist, rather than being the user's own module."""
    return any(getattr(model, attribute, None) for attribute in ("config", "base_model_prefix", "pretrained_cfg"))


def _heads_beside_backbone(model: nn.Module) -> list[str]:
    backbone = getattr(model, "base_model_prefix", None)
    children = dict(model.named_children())
    if not isinstance(backbone, str) or backbone not in children:
        return []  # a plain module, or a bare backbone (e.g. transformers' BertModel)
    return [name for name, child in children.items() if name != backbone and any(True for _ in child.parameters())]


def _output_embeddings(model: nn.Module) -> str | None:
    """The name of ``model.get_output_embeddings()`` (transformers' LM head), or None."""
    getter = getattr(model, "get_output_embeddings", None)
    if not callable(getter):
        return None
    try:
        module = getter()
    except (AttributeError, NotImplementedError, TypeError):  # a model whose getter does not apply to it
        return None
    if not isinstance(module, nn.Module):
        return None
    return next((name for name, found in model.named_modules() if found is module and name), None)


def _within(name: str, head: str) -> bool:
    """Whether module ``name`` is ``head`` or inside it."""
    return name == head or name.startswith(head + ".")
