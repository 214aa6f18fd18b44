"""What a fine-tuning run leaves behind: its held-out metric curve and what it cost."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

__all__ = ["EvalPoint", "RunRecord", "eva_summary"]


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
            (:func:`eva_bench.measure_cost`), ``None`` where it could not be measured.
        held_out: metrics on the held-out split, scored once after the last step, when ``curve`` is on a
            validation split carved from the training data; ``None``: ``curve`` is the held-out score.
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
    held_out: Mapping[str, float] | None = None

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
        held_out: Mapping[str, float] | None = None,
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
            held_out=held_out,
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
