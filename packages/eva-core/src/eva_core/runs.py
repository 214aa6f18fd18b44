"""A fine-tuning run as the domain recipes and the comparison runner share it: the loop and its record.

The loop is deliberately plain (AdamW, linear warm-up then linear decay, gradient clipping) so every
initialization method is trained the same way; the domain supplies the loss and the evaluation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import EmptyDataError, InvalidConfigError

__all__ = ["EvalPoint", "RunRecord", "eva_summary", "shuffled_epochs", "train"]

_log = logging.getLogger(__name__)

LossFn = Callable[[nn.Module, Any], torch.Tensor]
EvaluateFn = Callable[[nn.Module], Mapping[str, float]]


@dataclass(frozen=True)
class EvalPoint:
    """Held-out metrics after ``step`` optimizer steps (step 0 = right after initialization)."""

    step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class RunRecord:
    """One fine-tuning run of one initialization method and seed.

    Attributes:
        method: the initialization (``lora``, ``eva``, ``pissa``, ...).
        seed: seeds data order, dropout and random initializations.
        metric: the headline held-out metric of ``curve`` (e.g. ``accuracy``, ``f1``, ``exact_match``).
        init_seconds: wall time of the adapter initialization (EVA: the fit included).
        train_seconds: wall time of the training steps and evaluations.
        trainable_parameters: parameters with ``requires_grad`` (adapters and the trained head).
        curve: held-out metrics at the evaluation steps, step 0 first.
        extra: anything else worth keeping (EVA ranks, batches consumed, ...).
        init_peak_bytes: memory high-water mark of the initialization above what was in use before it
            (:func:`eva_core.measure_cost`), ``None`` where it could not be measured.
    """

    method: str
    seed: int
    metric: str
    init_seconds: float
    train_seconds: float
    trainable_parameters: int
    curve: tuple[EvalPoint, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)
    init_peak_bytes: int | None = None

    def final(self, name: str | None = None) -> float:
        """The last evaluation's value of ``name`` (default: the headline metric)."""
        return float(self.curve[-1].metrics[name or self.metric])

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (``json.dumps`` ready)."""
        return asdict(self)

    @classmethod
    def of(
        cls,
        model: nn.Module,
        *,
        method: str,
        seed: int,
        metric: str,
        init_seconds: float,
        train_seconds: float,
        curve: tuple[EvalPoint, ...],
        extra: Mapping[str, Any] | None = None,
        init_peak_bytes: int | None = None,
    ) -> RunRecord:
        """The record of a run of ``model`` (the trained peft model): its trainable parameters counted, and
        for an EVA run (a model with an ``eva_state``) ``extra`` gains :func:`eva_summary`."""
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return cls(
            method=method,
            seed=seed,
            metric=metric,
            init_seconds=init_seconds,
            train_seconds=train_seconds,
            trainable_parameters=int(trainable),
            curve=curve,
            extra={**(extra or {}), **eva_summary(model)},
            init_peak_bytes=init_peak_bytes,
        )


def eva_summary(model: nn.Module) -> dict[str, Any]:
    """What a run keeps of an EVA fit: ``ranks`` per layer, ``eva_batches`` consumed, ``eva_seconds``
    taken and ``explained_variance``, each layer's explained-variance ratios of the components the fit
    kept (descending); empty for a model without an ``eva_state`` (any other initialization)."""
    state = getattr(model, "eva_state", None)
    if state is None:
        return {}
    spectra = {
        name: [round(float(value), 6) for value in layer.explained_variance_ratio]
        for name, layer in state.layers.items()
    }
    return {
        "ranks": dict(state.ranks),
        "eva_batches": state.steps,
        "eva_seconds": state.seconds,
        "explained_variance": spectra,
    }


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
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, math.ceil(warmup * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    wanted = sorted(set(eval_at))
    stream = _epochs(batches)
    reallocate = getattr(getattr(model, "base_model", None), "update_and_allocate", None)
    points = []
    if 0 in wanted:
        points.append(_evaluate(model, evaluate, 0))
    for step in tqdm(range(1, steps + 1), desc="train", disable=not progress, leave=False):
        model.train()
        loss = loss_fn(model, next(stream))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower the learning rate.")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        if reallocate is not None:
            reallocate(step)
        optimizer.zero_grad(set_to_none=True)
        if step in wanted:
            points.append(_evaluate(model, evaluate, step))
            _log.info("step %d: %s (train loss %.4f)", step, dict(points[-1].metrics), loss.item())
    return tuple(points)


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


def _evaluate(model: nn.Module, evaluate: EvaluateFn, step: int) -> EvalPoint:
    model.eval()
    with torch.no_grad():
        metrics = {name: float(value) for name, value in evaluate(model).items()}
    return EvalPoint(step=step, metrics=metrics)
