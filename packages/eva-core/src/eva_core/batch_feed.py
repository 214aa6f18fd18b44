"""Feeding a fit: each user batch prepared by the plugins and moved to the model's device, behind a
progress bar."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .config import EvaConfig
from .distributed import ProcessGroup
from .errors import UnsupportedBatchError
from .hookspecs import PreparedBatch
from .plugins import DomainHooks

__all__ = ["BatchProgress", "model_device", "prepare"]


def prepare(
    hooks: DomainHooks, batch: Any, model: nn.Module, config: EvaConfig, device: torch.device | None
) -> PreparedBatch:
    prepared = hooks.call("eva_prepare_batch", batch=batch, model=model, config=config)
    if prepared is None:
        raise UnsupportedBatchError(
            f"batches yielded a {type(batch).__name__}, which no eva plugin (domain {hooks.domain!r}) can feed "
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
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return None


class BatchProgress:
    """A progress bar over the batch iterator (shown by rank 0 only); ``next(bar)`` reads the next batch."""

    def __init__(
        self, stream: Iterator[Any], batches: Iterable[Any], config: EvaConfig, group: ProcessGroup | None, start: int
    ) -> None:
        total = config.max_steps
        if hasattr(batches, "__len__"):
            total = min(total, len(batches))  # type: ignore[arg-type]
        shown = config.progress and (group is None or group.rank == 0)
        self.bar = tqdm(
            stream, total=total, initial=start, desc="EVA", unit="batch", disable=None if shown else True, leave=False
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
