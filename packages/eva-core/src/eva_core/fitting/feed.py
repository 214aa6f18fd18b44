"""Feeding a fit: the user's batches read behind a progress display (a bar, or log lines in a batch job), the
ones a resumed fit already consumed skipped, and each prepared by the plugins and moved to the model's
device."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from ..contract import PreparedBatch
from ..errors import CheckpointMismatchError, EvaWarning, UnsupportedBatchError, warn

__all__ = [
    "LOG_EVERY_SECONDS",
    "BatchProgress",
    "in_notebook",
    "model_device",
    "placed",
    "progress_display",
    "skip_consumed",
]

_log = logging.getLogger(__name__)


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


def warn_if_positional(batch: Any, prepared: PreparedBatch) -> None:
    """Called when the model raised on ``prepared``: if the batch was a tuple or list passed positionally as
    ``model(*batch)``, say so. A ``TensorDataset`` of ``(input_ids, attention_mask, labels)`` puts the
    labels into the model's third parameter (BERT's ``token_type_ids``) and fails deep inside the model with
    a shape error that names none of this."""
    if not isinstance(batch, (tuple, list)) or len(prepared.args) < 2 or prepared.kwargs:
        return
    warn(
        f"the model failed on a batch that was a {type(batch).__name__} of {len(prepared.args)} items, which "
        "fit passes positionally: model(*batch), so the i-th item fills the model's i-th parameter (labels "
        "in a tuple or list land in whatever parameter comes third, e.g. token_type_ids). Yield dicts naming each "
        "tensor (input_ids=..., attention_mask=...) instead, e.g. collate_fn=lambda rows: {...}.",
        EvaWarning,
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
    """Reads the batches and shows how far the fit is where the user looks; ``next(bar)`` reads the next batch.

    Where it shows (decided once, by :func:`progress_display`): a tqdm bar on a terminal and in a Jupyter or
    IPython kernel (``tqdm.auto``: the notebook widget when ipywidgets is installed, text otherwise); in a
    batch job (stderr not a terminal, no kernel) an INFO line on ``logging.getLogger("eva_core.fitting.feed")``
    on the first batch and then every :data:`LOG_EVERY_SECONDS`; nothing when ``shown`` is False. A batch
    costs at most one clock reading.

    Args:
        stream: the batches still to read.
        batches: what the user passed (its length, if it has one, bounds the bar).
        max_steps: the fit's ``max_steps``, which bounds the bar.
        start: the batches already consumed (a resumed fit).
        shown: whether to show progress (``EvaConfig.progress``, and only on rank 0 of a distributed fit).
        layers: the layers measured, for the log lines.
        clock: seconds from a monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        stream: Iterator[Any],
        batches: Iterable[Any],
        max_steps: int,
        start: int,
        shown: bool,
        layers: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        length = _length(batches)
        total = max_steps if length is None else min(max_steps, length)
        self.display = progress_display(shown)
        self.bar = tqdm(
            stream,
            total=total,
            initial=start,
            desc="EVA",
            unit="batch",
            disable=self.display != "bar",  # not tqdm's None, which hides the bar whenever stderr is no TTY
            leave=False,
        )
        self.iterator = iter(self.bar)
        self.total, self.read, self.layers, self.converged = total, start, layers, 0
        self.clock = clock
        self.started = clock() if self.display == "log" else 0.0
        self.logged: float | None = None  # when the last line was logged (None: none yet)

    def __next__(self) -> Any:
        batch = next(self.iterator)
        if self.display == "log":
            self.read += 1
            now = self.clock()
            if self.logged is None or now - self.logged >= LOG_EVERY_SECONDS:
                self.logged = now
                self._log(now)
        return batch

    def _log(self, now: float) -> None:
        _log.info(
            "EVA fit: %d/%d batches read, %d/%d layers converged (%d still measuring), %.0fs elapsed",
            self.read, self.total, self.converged, self.layers, self.layers - self.converged, now - self.started,
        )  # fmt: skip

    def converged_layers(self, converged: int) -> None:
        """Record that ``converged`` of the layers have converged (shown on the bar and in the log lines)."""
        self.converged = converged
        self.bar.set_postfix_str(f"{converged}/{self.layers} layers converged")

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


LOG_EVERY_SECONDS = 30.0
"""Seconds between two progress lines of a fit in a batch job (no terminal, no notebook)."""


def progress_display(shown: bool) -> Literal["bar", "log", "off"]:
    """How a fit shows its progress: ``"off"`` unless ``shown``; a ``"bar"`` when stderr is a terminal or
    the fit runs in a Jupyter/IPython kernel (whose stderr is no terminal); ``"log"`` lines otherwise."""
    if not shown:
        return "off"
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        terminal = bool(isatty()) if isatty is not None else False
    except ValueError:  # a closed stream
        terminal = False
    return "bar" if terminal or in_notebook() else "log"


def in_notebook() -> bool:
    """Whether this process is a Jupyter/IPython kernel (a notebook, JupyterLab, VS Code, Colab), read
    without importing IPython: its shell has a ``kernel``; a terminal IPython has none."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a half-imported or unusual IPython must not stop the fit
        return False
    return getattr(shell, "kernel", None) is not None
