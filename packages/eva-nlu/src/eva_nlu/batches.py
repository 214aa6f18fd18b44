"""How a batch becomes encoder inputs and a token mask, which rows a DeBERTa projection gives, and text
rows tokenized into padded batches.

A batch is a dict as a Hugging Face tokenizer returns it: ``input_ids`` (B, T), ``attention_mask``
(B, T), optionally ``token_type_ids`` (B, T) and ``labels`` (B,). The rows EVA measures are its
non-padding tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from eva_core import PreparedBatch
from eva_core.capture.rows import token_rows
from eva_core.errors import InvalidConfigError

from .errors import DataFormatError
from .glue import GlueTask, get_task, row_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["MODEL_INPUTS", "batches", "prepare_batch", "token_rows_skipping_positions"]

MODEL_INPUTS: frozenset[str] = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids"})
"""The batch keys an encoder's forward takes (``labels`` is left out: EVA needs no loss)."""


def prepare_batch(batch: Any) -> PreparedBatch | None:
    """Keyword arguments of ``batch`` (a dict with ``input_ids``) and its token mask: ``attention_mask != 0``
    (B, T), or every token when there is no ``attention_mask``; ``None`` for any other batch.

    The mask is always given, even without padding: :func:`token_rows_skipping_positions` needs its shape.
    """
    if not isinstance(batch, Mapping) or not isinstance(batch.get("input_ids"), torch.Tensor):
        return None
    input_ids = batch["input_ids"]  # (B, T)
    attention = batch.get("attention_mask")
    mask = attention != 0 if isinstance(attention, torch.Tensor) else torch.ones_like(input_ids, dtype=torch.bool)
    kwargs = {key: value for key, value in batch.items() if key in MODEL_INPUTS}
    return PreparedBatch(kwargs=kwargs, row_mask=mask)


def token_rows_skipping_positions(
    layer_input: torch.Tensor, row_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token rows of a DeBERTa query/key projection; its call on the relative-position embeddings
    ((1, 2k, d_in), which does not line up with the (B, T) token mask) gives rows that are all masked out.

    The call is recognised by shape alone, so in the one ambiguous case (a batch of a single sequence of
    exactly 2k tokens) the position embeddings are counted as tokens; :func:`prepare_batch` always
    provides the mask this test needs.

    Args:
        layer_input: (B, T, d_in) hidden states, or (1, 2k, d_in) position embeddings.
        row_mask: (B, T) bool or None.

    Returns:
        rows (N, d_in) and mask (N,) (all False for position embeddings).
    """
    if row_mask is not None and tuple(layer_input.shape[:-1]) != tuple(row_mask.shape):
        rows = layer_input.reshape(-1, layer_input.shape[-1])  # (N, d_in)
        return rows, torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    return token_rows(layer_input, row_mask)


def batches(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    task: str | GlueTask,
    batch_size: int,
    *,
    max_length: int = 128,
    shuffle: bool = False,
    seed: int = 0,
    with_labels: bool = False,
    drop_last: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Cut ``rows`` into batches the tokenizer pads to their own longest example (sentence pairs as pairs:
    ``[CLS] a [SEP] b [SEP]`` for BERT).

    Args:
        rows: N rows holding ``task.text_keys`` (as :func:`eva_nlu.read_rows` returns them; a
            ``datasets.Dataset`` too), and ``label`` with ``with_labels``.
        tokenizer: a Hugging Face tokenizer with a pad token.
        task: the task or its name.
        batch_size: B, rows per batch (the last batch may be smaller unless ``drop_last``).
        max_length: longer examples are truncated to this many tokens (pairs: the longer side first).
        shuffle: visit rows in a random order drawn from ``seed`` (the same seed gives the same batches).
        seed: seeds the shuffle.
        with_labels: add ``labels`` (B,): ``long`` class ids, or ``float32`` scores for regression.
        drop_last: leave out a last batch smaller than ``batch_size``.

    Returns:
        ceil(N / B) dicts of ``input_ids``, ``attention_mask`` (and ``token_type_ids``) (B, T), and ``labels`` (B,).

    Raises:
        DataFormatError: a row lacks a text or (``with_labels``) its label, or the tokenizer has no pad token.
    """
    glue_task = get_task(task)
    for name, value, example in (("batch_size", batch_size, 32), ("max_length", max_length, 128)):
        if not (isinstance(value, int) and value >= 1):
            raise InvalidConfigError(f"{name}={value!r} is invalid; use an integer >= 1, e.g. {example}")
    if tokenizer.pad_token_id is None:
        raise DataFormatError(
            f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token (e.g. to its eos token)"
        )
    order = list(range(len(rows)))
    if shuffle:
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    starts = range(0, len(order) - batch_size + 1 if drop_last else len(order), batch_size)
    chunks = [[(index, rows[index]) for index in order[start : start + batch_size]] for start in starts]
    return [_batch(chunk, tokenizer, glue_task, max_length, with_labels) for chunk in chunks]


def _batch(
    chunk: list[tuple[int, Mapping[str, Any]]],
    tokenizer: PreTrainedTokenizerBase,
    task: GlueTask,
    max_length: int,
    labels: bool,
) -> dict[str, torch.Tensor]:
    """``(index, row)`` pairs tokenized and padded together."""
    texts = [[_field(index, row, key, task) for index, row in chunk] for key in task.text_keys]  # one list per key
    encoded = tokenizer(*texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    batch = {name: tensor for name, tensor in encoded.items() if name in MODEL_INPUTS}  # (B, T) each
    if labels:
        values = [_field(index, row, "label", task) for index, row in chunk]
        batch["labels"] = torch.tensor(values, dtype=torch.float32 if task.is_regression else torch.long)  # (B,)
    return batch


def _field(index: int, row: Mapping[str, Any], key: str, task: GlueTask) -> Any:
    where = f"row {index} of rows"
    if key in row:
        return row[key] if key == "label" else row_text(row[key], key, where)
    what, fix = ("label", "pass with_labels=False for unlabelled rows") if key == "label" else ("text", "")
    raise DataFormatError(
        f"{where} lacks the {key!r} {what} of task {task.name} (keys: {sorted(row)}); "
        f"{fix or 'read the data with eva_nlu.read_rows(path, task) first'}"
    )
