"""GLUE rows tokenized into padded batches (each padded to its own longest example, no ``DataCollator``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from eva_core.errors import InvalidConfigError

from .rows import DataFormatError, row_label, row_text
from .tasks import GlueTask, get_task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["Encoding", "batches", "collate", "encode"]


@dataclass(frozen=True)
class Encoding:
    """One tokenized example.

    Attributes:
        features: (T,) ids per model input: ``input_ids``, ``attention_mask`` and, when the tokenizer
            makes them, ``token_type_ids``.
        label: the class id or score; ``None`` for an unlabelled row.
    """

    features: Mapping[str, tuple[int, ...]]
    label: int | float | None


def encode(
    rows: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, task: str | GlueTask, max_length: int = 128
) -> list[Encoding]:
    """Tokenize rows one by one, unpadded; sentence pairs as pairs (``[CLS] a [SEP] b [SEP]`` for BERT).

    Args:
        rows: N rows (as :func:`read_rows` returns them) holding ``task.text_keys``.
        tokenizer: a Hugging Face tokenizer.
        task: the task or its name.
        max_length: longer examples are truncated to this many tokens (pairs: the longer side first).

    Returns:
        N :class:`Encoding`, each of its own length T_i <= ``max_length``.
    """
    glue_task = get_task(task)
    if not (isinstance(max_length, int) and max_length >= 1):
        raise InvalidConfigError(f"max_length={max_length!r} is invalid; use an integer >= 1, e.g. 128")
    if not rows:
        return []
    texts: list[list[str]] = [[] for _ in glue_task.text_keys]
    labels: list[int | float | None] = []
    for index, row in enumerate(rows):
        where = f"row {index} of rows"
        for key, column in zip(glue_task.text_keys, texts, strict=True):
            if key not in row:
                raise DataFormatError(
                    f"{where} lacks the {key!r} text of task {glue_task.name} (keys: {sorted(row)}); "
                    "read the data with read_rows(source, task) first"
                )
            column.append(row_text(row[key], key, where))
        label = row.get(glue_task.label_key)
        labels.append(None if label is None else row_label(label, glue_task, where))
    tokenized = tokenizer(*texts, truncation=True, max_length=max_length)
    names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in tokenized]
    return [
        Encoding({name: tuple(tokenized[name][index]) for name in names}, label) for index, label in enumerate(labels)
    ]


def collate(
    encodings: Sequence[Encoding], tokenizer: PreTrainedTokenizerBase, *, with_labels: bool = True
) -> dict[str, torch.Tensor]:
    """Pad encodings to their longest and stack them: B x (T_i,) -> (B, T) per feature, plus ``labels`` (B,).

    Padding follows ``tokenizer.padding_side``: ``input_ids`` with ``pad_token_id``, ``attention_mask``
    with 0, ``token_type_ids`` with ``pad_token_type_id``. ``labels`` is ``long`` for class ids and
    ``float32`` for scores.

    Raises:
        DataFormatError: ``with_labels`` and an encoding has no label, or the tokenizer has no pad token.
    """
    if not encodings:
        raise DataFormatError("encodings is empty; pass at least one Encoding")
    if tokenizer.pad_token_id is None:
        raise DataFormatError(
            f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token (e.g. to its eos token)"
        )
    fill = {"input_ids": tokenizer.pad_token_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    left = getattr(tokenizer, "padding_side", "right") == "left"
    longest = max(len(encoding.features["input_ids"]) for encoding in encodings)
    batch: dict[str, torch.Tensor] = {}
    for name in encodings[0].features:
        padded = []
        for encoding in encodings:
            ids, padding = list(encoding.features[name]), [fill.get(name, 0)] * (longest - len(encoding.features[name]))
            padded.append(padding + ids if left else ids + padding)
        batch[name] = torch.tensor(padded, dtype=torch.long)  # (B, T)
    if with_labels:
        labels = [encoding.label for encoding in encodings]
        if any(label is None for label in labels):
            raise DataFormatError("an encoding has no label; pass with_labels=False for unlabelled rows")
        regression = any(isinstance(label, float) for label in labels)
        batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)  # (B,)
    return batch


def batches(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    task: str | GlueTask,
    batch_size: int,
    *,
    max_length: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    with_labels: bool = True,
    drop_last: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Tokenize ``rows`` once and cut them into padded batches (each padded to its own longest example).

    Args:
        rows: N rows holding ``task.text_keys`` (and the label, with ``with_labels``).
        tokenizer: a Hugging Face tokenizer.
        task: the task or its name.
        batch_size: B, rows per batch (the last batch may be smaller unless ``drop_last``).
        max_length: longer examples are truncated to this many tokens.
        shuffle: visit rows in a random order drawn from ``seed`` (the same seed gives the same batches).
        seed: seeds the shuffle.
        with_labels: add ``labels`` (B,) (``long``, or ``float32`` for regression).
        drop_last: leave out a last batch smaller than ``batch_size``.

    Returns:
        ceil(N / B) dicts of ``input_ids``, ``attention_mask`` (and ``token_type_ids``) (B, T) and ``labels`` (B,).
    """
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise InvalidConfigError(f"batch_size={batch_size!r} is invalid; use an integer >= 1, e.g. 32")
    encodings = encode(rows, tokenizer, task, max_length)
    order = list(range(len(encodings)))
    if shuffle:
        order = torch.randperm(len(encodings), generator=torch.Generator().manual_seed(seed)).tolist()
    starts = range(0, len(order) - batch_size + 1 if drop_last else len(order), batch_size)
    return [
        collate([encodings[i] for i in order[start : start + batch_size]], tokenizer, with_labels=with_labels)
        for start in starts
    ]
