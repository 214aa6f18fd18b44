"""The one training loop every initialization is compared with, run through accelerate.

The loop is deliberately plain (AdamW, linear warm-up then linear decay, gradient clipping) so every
initialization method is trained the same way; the domain supplies the loss and the evaluation.
accelerate places the model and the batches (CPU, one GPU, or one process per GPU under
``accelerate launch``, each process reading every W-th batch) and applies mixed precision when its
configuration asks for it, so the same run moves to an accelerator unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from eva_core.errors import EmptyDataError, InvalidConfigError

from .records import EvalPoint

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = ["EvaluateFn", "LossFn", "score", "shuffled_epochs", "train"]

_log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
"""``(model, batch) -> scalar loss``."""
EvaluateFn = Callable[[nn.Module], Mapping[str, float]]
"""``model -> {metric: value}`` on held-out data."""


def shuffled_epochs(batches: Sequence[Any], seed: int) -> Iterator[Any]:
    """``batches`` epoch after epoch, each epoch in a new order drawn from ``seed`` (endless)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index]


def train(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    evaluate: EvaluateFn,
    *,
    steps: int,
    eval_at: Sequence[int],
    lr: float,
    warmup: float = 0.1,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    progress: bool = False,
    accelerator: Accelerator | None = None,
) -> tuple[EvalPoint, ...]:
    """Train the parameters of ``model`` that require grad for ``steps`` steps; evaluate at ``eval_at``.

    Args:
        model: a peft model (only its trainable parameters move).
        batches: training batches, read epoch after epoch (a list or a ``DataLoader``, which reshuffles
            each epoch if it shuffles), or an endless iterator.
        loss_fn: ``(model, batch) -> scalar loss``.
        evaluate: ``model -> {metric: value}`` on held-out data; called in eval mode under no_grad.
            A tuner that reallocates ranks while training (AdaLoRA: ``base_model.update_and_allocate``)
            is called after every optimizer step, before the gradients are cleared.
        steps: optimizer steps.
        eval_at: steps after which to evaluate (0 evaluates before training).
        lr: peak learning rate of AdamW.
        warmup: fraction of ``steps`` with a linear warm-up; then a linear decay to 0.
        accelerator: where and how to run (default: ``accelerate.Accelerator()``, which reads
            ``accelerate config`` / ``accelerate launch`` settings).

    Returns:
        the evaluations, in step order.
    """
    if steps < 0 or any(s < 0 or s > steps for s in eval_at):
        raise InvalidConfigError(
            f"train(steps={steps}, eval_at={list(eval_at)}): evaluation steps must lie in [0, steps]."
        )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidConfigError("train(model=...) has no parameter with requires_grad; wrap it with adapters first.")
    from accelerate import Accelerator

    accelerator = accelerator or Accelerator()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_decay(steps, warmup))
    prepared, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(prepared)
    reallocate = getattr(getattr(unwrapped, "base_model", None), "update_and_allocate", None)
    stream = _shard(_epochs(batches), accelerator.process_index, accelerator.num_processes)
    wanted = set(eval_at)
    points = [_evaluate(unwrapped, evaluate, 0)] if 0 in wanted else []
    for step in tqdm(range(1, steps + 1), desc="train", disable=not progress, leave=False):
        prepared.train()
        loss = loss_fn(prepared, _to_device(next(stream), accelerator.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower the learning rate.")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        if reallocate is not None:
            reallocate(step)
        optimizer.zero_grad(set_to_none=True)
        if step in wanted:
            points.append(_evaluate(unwrapped, evaluate, step))
            _log.info("step %d: %s (train loss %.4f)", step, dict(points[-1].metrics), loss.item())
    return tuple(points)


def _warmup_then_decay(steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate factor after ``s`` scheduler steps: linear up to 1 over ``ceil(warmup * steps)``
    steps, then linear down to 0 at ``steps``."""
    warm = max(1, math.ceil(warmup * steps))
    return lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))


def _epochs(batches: Iterable[Any]) -> Iterator[Any]:
    """``batches`` again and again; an iterable that yields nothing (a spent iterator) is an error."""
    while True:
        count = 0
        for count, batch in enumerate(batches, start=1):  # noqa: B007 - count is read after the loop
            yield batch
        if count == 0:
            raise EmptyDataError(
                "train(batches=...) yielded no batch for a new epoch; pass a list or a DataLoader (read again each "
                "epoch) or an endless iterator, not a one-shot iterator shorter than `steps`."
            )


def _shard(stream: Iterator[Any], index: int, count: int) -> Iterator[Any]:
    """Every ``count``-th batch of ``stream`` from the ``index``-th: this process's share."""
    for position, batch in enumerate(stream):
        if position % count == index:
            yield batch


def _to_device(batch: Any, device: torch.device) -> Any:
    from accelerate.utils import send_to_device

    return send_to_device(batch, device)


def score(model: nn.Module, evaluate: EvaluateFn) -> dict[str, float]:
    """``evaluate(model)`` in eval mode under no_grad, as floats.

    A DoRA layer computes its weight norm (and ``B @ A``, a full-size matrix) once per call rather than once
    per forward (peft's ``DoraCaching``, where the installed peft has it): the same numbers, bit for bit, and
    on greedy generation, which runs a forward per token, most of a DoRA run's time. What a layer cached in an
    earlier call is dropped first: the weights may have moved since.
    """
    model.train()  # peft's DoRA layers clear their cache on train()
    model.eval()
    with torch.no_grad(), _dora_caching():
        return {name: float(value) for name, value in evaluate(model).items()}


def _dora_caching() -> contextlib.AbstractContextManager[Any]:
    from peft import helpers

    caching = getattr(helpers, "DoraCaching", None)  # an older peft has none: every forward recomputes
    return contextlib.nullcontext() if caching is None else caching()


def _evaluate(model: nn.Module, evaluate: EvaluateFn, step: int) -> EvalPoint:
    return EvalPoint(step=step, metrics=score(model, evaluate))
