"""Feeding a fit: the user's batches read behind a progress bar, the ones a resumed fit already consumed
skipped, and each prepared by the plugins and moved to the model's device."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..contract import PreparedBatch
from ..errors import CheckpointMismatchError, UnsupportedBatchError

__all__ = ["BatchProgress", "model_device", "placed", "skip_consumed"]


def placed(prepared: PreparedBatch | None, batch: Any, domain: str, device: torch.device | None) -> PreparedBatch:
    """What the plugins of ``domain`` prepared of ``batch`` (``eva_prepare_batch``), on ``device`` (None:
    where it is).

    Raises:
        UnsupportedBatchError: no plugin could prepare a batch of that type (``prepared`` is None).
    """
    if prepared is None:
        raise UnsupportedBatchError(
            f"batches yielded a {type(batch).__name__}, which no eva plugin (domain {domain!r}) can feed "
            "to the model; yield a dict of tensors (keyword arguments), a tuple (positional arguments) or a "
            "tensor, or install the domain package for this kind of data."
        )
    if device is None:
        return prepared
    return PreparedBatch(
        args=_to_device(prepared.args, device),
        kwargs=_to_device(dict(prepared.kwargs), device),
        row_mask=None if prepared.row_mask is None else prepared.row_mask.to(device),
    )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter that is not on the meta device (None: no such one)."""
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return None


def skip_consumed(stream: Iterator[Any], count: int) -> Iterator[Any]:
    """``stream`` after its first ``count`` batches (those a resumed fit consumed before its checkpoint).

    Raises:
        CheckpointMismatchError: ``stream`` has fewer than ``count`` batches.
    """
    end = object()
    for seen in range(count):
        if next(stream, end) is end:
            raise CheckpointMismatchError(
                f"resume: the batches ran out after {seen} but the checkpoint had consumed {count}; pass the "
                "same batches, in the same order, as the interrupted fit."
            )
    return stream


def _length(batches: Iterable[Any]) -> int | None:
    """``len(batches)``, or None when it has no valid one: a DataLoader over an ``IterableDataset`` has
    ``__len__`` but raises ``TypeError`` from it, and other iterables may raise or return a non-integer.
    The length only sizes the progress bar, so no failure of ``len()`` may stop the fit."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except Exception:  # TypeError above; ValueError (negative), OverflowError, NotImplementedError elsewhere
        return None


class BatchProgress:
    """A progress bar over the batch iterator; ``next(bar)`` reads the next batch.

    Args:
        stream: the batches still to read.
        batches: what the user passed (its length, if it has one, bounds the bar).
        max_steps: the fit's ``max_steps``, which bounds the bar.
        start: the batches already consumed (a resumed fit).
        shown: whether to show the bar (``EvaConfig.progress``, and only on rank 0 of a distributed fit).
    """

    def __init__(self, stream: Iterator[Any], batches: Iterable[Any], max_steps: int, start: int, shown: bool) -> None:
        length = _length(batches)
        total = max_steps if length is None else min(max_steps, length)
        self.bar = tqdm(
            stream,
            total=total,
            initial=start,
            desc="EVA",
            unit="batch",
            disable=None if shown else True,
            leave=False,
        )
        self.iterator = iter(self.bar)

    def __next__(self) -> Any:
        return next(self.iterator)

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
