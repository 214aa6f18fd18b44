"""The GLUE metrics: scikit-learn's accuracy, binary F1 and Matthews correlation, scipy's Pearson and
Spearman, and which of them each task reports.

Every metric takes predictions and references as sequences of numbers or 1-D tensors of equal length
``N`` and returns a Python ``float``. The degenerate cases, where a formula divides by zero, are defined
rather than NaN, so a collapsed model scores as uninformative instead of poisoning a "best checkpoint"
comparison:

- ``f1`` is 0 when there is no positive among the predictions nor the references (scikit-learn's
  ``zero_division=0``);
- ``matthews_corrcoef`` is 0 when the predictions or the references hold a single class (scikit-learn's
  value, returned here without its single-label warning);
- ``pearson`` and ``spearman`` are 0 when either side is constant (scipy returns NaN there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as sk

from eva_core.errors import EvaError, InvalidConfigError
from eva_nlu.glue import TASKS, GlueTask, get_task

__all__ = [
    "METRIC_NAMES",
    "SCORING",
    "MetricInputError",
    "TaskScoring",
    "Values",
    "accuracy",
    "f1",
    "glue_metrics",
    "majority_baseline",
    "matthews_corrcoef",
    "pearson",
    "scoring",
    "spearman",
]

Values = Sequence[float] | Sequence[int] | torch.Tensor
"""(N,) numbers: a list, a tuple or a 1-D tensor."""


class MetricInputError(EvaError, ValueError):
    """Predictions and references cannot be scored: empty, of different lengths or of the wrong kind."""


def accuracy(predictions: Values, labels: Values) -> float:
    """The fraction of ``predictions`` equal to ``labels``: (N,), (N,) -> float in [0, 1]."""
    predicted, truth = _classes(predictions, labels)
    return float(sk.accuracy_score(truth, predicted))


def f1(predictions: Values, labels: Values) -> float:
    """Binary F1 of the positive class 1: ``2TP / (2TP + FP + FN)``; 0 when that is 0 / 0.

    Args:
        predictions: (N,) class ids in {0, 1}.
        labels: (N,) class ids in {0, 1}.

    Raises:
        MetricInputError: a class id is not 0 or 1.
    """
    predicted, truth = _classes(predictions, labels)
    for name, values in (("predictions", predicted), ("labels", truth)):
        bad = sorted(set(np.unique(values).tolist()) - {0, 1})
        if bad:
            raise MetricInputError(f"f1 is binary: {name} holds class ids {bad}; pass ids in {{0, 1}}")
    return float(sk.f1_score(truth, predicted, zero_division=0.0))


def matthews_corrcoef(predictions: Values, labels: Values) -> float:
    """Matthews correlation of class ids, binary or multiclass (Gorodkin's R_K); 0 when either side holds
    a single class."""
    predicted, truth = _classes(predictions, labels)
    if len(np.unique(predicted)) < 2 or len(np.unique(truth)) < 2:
        return 0.0
    return float(sk.matthews_corrcoef(truth, predicted))


def pearson(predictions: Values, labels: Values) -> float:
    """Pearson correlation ``cov(x, y) / (std(x) std(y))`` of (N,), (N,); 0 when either is constant."""
    x, y = _reals(predictions, labels)
    return 0.0 if _constant(x, y) else float(stats.pearsonr(x, y).statistic)


def spearman(predictions: Values, labels: Values) -> float:
    """Spearman rank correlation (tied values share their average rank); 0 when either side is constant."""
    x, y = _reals(predictions, labels)
    return 0.0 if _constant(x, y) else float(stats.spearmanr(x, y).statistic)


_METRICS: Mapping[str, Callable[[Values, Values], float]] = MappingProxyType(
    {"accuracy": accuracy, "f1": f1, "matthews_corrcoef": matthews_corrcoef, "pearson": pearson, "spearman": spearman}
)
METRIC_NAMES: tuple[str, ...] = tuple(_METRICS)
_CLASSIFICATION_METRICS = frozenset({"accuracy", "f1", "matthews_corrcoef"})


@dataclass(frozen=True)
class TaskScoring:
    """How a GLUE task is scored on held-out data.

    Args:
        task: the task (its text columns and labels are :mod:`eva_nlu.glue`'s).
        metrics: the metrics reported, names from :data:`METRIC_NAMES`.
        headline: the one metric GLUE ranks the task by; one of ``metrics``.

    Raises:
        InvalidConfigError: a metric is unknown or does not suit the task, or the headline is not reported.
    """

    task: GlueTask
    metrics: tuple[str, ...]
    headline: str

    def __post_init__(self) -> None:
        unknown = [metric for metric in self.metrics if metric not in METRIC_NAMES]
        _require(bool(self.metrics) and not unknown, "metrics", self.metrics, f"names from {METRIC_NAMES}")
        if self.task.is_regression:
            wrong = [metric for metric in self.metrics if metric in _CLASSIFICATION_METRICS]
            _require(not wrong, "metrics", self.metrics, "pearson/spearman for a regression task (num_labels=1)")
        _require(self.headline in self.metrics, "headline", self.headline, f"one of metrics={self.metrics}")


def _require(condition: bool, name: str, value: object, fix: str) -> None:
    if not condition:
        raise InvalidConfigError(f"TaskScoring {name}={value!r} is invalid; use {fix}")


SCORING: Mapping[str, TaskScoring] = MappingProxyType(
    {
        scored.task.name: scored
        for scored in (
            TaskScoring(TASKS["cola"], ("matthews_corrcoef", "accuracy"), "matthews_corrcoef"),
            TaskScoring(TASKS["sst2"], ("accuracy",), "accuracy"),
            TaskScoring(TASKS["mrpc"], ("accuracy", "f1"), "f1"),
            TaskScoring(TASKS["qqp"], ("accuracy", "f1"), "f1"),
            TaskScoring(TASKS["stsb"], ("pearson", "spearman"), "pearson"),
            TaskScoring(TASKS["mnli"], ("accuracy",), "accuracy"),
            TaskScoring(TASKS["qnli"], ("accuracy",), "accuracy"),
            TaskScoring(TASKS["rte"], ("accuracy",), "accuracy"),
        )
    }
)
"""How each task of :data:`eva_nlu.glue.TASKS` is scored, by task name (read-only)."""


def scoring(task: str | GlueTask) -> TaskScoring:
    """The scoring of ``task`` (a :class:`~eva_nlu.glue.GlueTask` or its name, spelled any common way)."""
    return SCORING[get_task(task).name]


def glue_metrics(task: str | GlueTask, predictions: Values, labels: Values) -> dict[str, float]:
    """Every metric of ``task`` (``scoring(task).metrics``, in that order; the headline is one of them).

    Args:
        task: a :class:`~eva_nlu.glue.GlueTask` or its name (``"sst2"``, ``"STS-B"``...).
        predictions: classification: (N,) class ids or (N, K) logits / probabilities (arg-maxed);
            regression: (N,) or (N, 1) scores.
        labels: (N,) class ids or scores.

    Returns:
        ``{metric name: value}``, e.g. ``{"accuracy": 0.84, "f1": 0.88}`` for MRPC.
    """
    scored = scoring(task)
    values = torch.as_tensor(predictions) if not isinstance(predictions, torch.Tensor) else predictions.detach()
    if values.dim() == 2:
        if scored.task.is_regression and values.shape[1] == 1:
            values = values[:, 0]  # (N,)
        elif not scored.task.is_regression:
            values = values.argmax(dim=-1)  # (N, K) -> (N,)
    return {name: _METRICS[name](values, labels) for name in scored.metrics}


def majority_baseline(task: str | GlueTask, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Every metric of ``task`` for always predicting the most common label of ``rows`` (the held-out rows a
    run is scored on): the score a classifier that learned nothing about the inputs gets. On a tie the
    smaller class id wins.

    Raises:
        InvalidConfigError: ``task`` is a regression task (no majority class) or ``rows`` is empty.
    """
    scored = scoring(task)
    _require(not scored.task.is_regression, "task", scored.task.name, "a classification task (not STS-B)")
    labels = [int(row["label"]) for row in rows]
    _require(bool(labels), "rows", rows, "the non-empty held-out rows the runs were scored on")
    majority = max(sorted(set(labels)), key=labels.count)
    return glue_metrics(task, [majority] * len(labels), labels)


def _as_vector(name: str, values: Values) -> torch.Tensor:
    tensor = values.detach().cpu() if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    if tensor.dim() != 1:
        raise MetricInputError(f"{name} has shape {tuple(tensor.shape)}; pass a 1-D sequence or tensor (N,)")
    if tensor.numel() == 0:
        raise MetricInputError(f"{name} is empty; pass at least one value")
    return tensor


def _pair(predictions: Values, labels: Values) -> tuple[torch.Tensor, torch.Tensor]:
    predicted, truth = _as_vector("predictions", predictions), _as_vector("labels", labels)
    if predicted.numel() != truth.numel():
        raise MetricInputError(
            f"predictions has {predicted.numel()} values but labels has {truth.numel()}; pass one per example"
        )
    return predicted, truth


def _classes(predictions: Values, labels: Values) -> tuple[np.ndarray, np.ndarray]:
    """Class ids as int64 (N,), (N,); floats are accepted when they are whole numbers."""
    pair = _pair(predictions, labels)
    for name, values in zip(("predictions", "labels"), pair, strict=True):
        if values.is_floating_point() and not torch.equal(values, values.round()):
            raise MetricInputError(
                f"{name} holds non-integer values such as {values[values != values.round()][0].item()!r}; "
                "pass class ids (arg-max logits first, or use glue_metrics which does it)"
            )
    return pair[0].long().numpy(), pair[1].long().numpy()


def _reals(predictions: Values, labels: Values) -> tuple[np.ndarray, np.ndarray]:
    """Float64 (N,), (N,), finite."""
    x, y = (values.double() for values in _pair(predictions, labels))
    for name, values in (("predictions", x), ("labels", y)):
        if not torch.isfinite(values).all():
            raise MetricInputError(f"{name} holds NaN or infinite values; pass finite scores")
    return x.numpy(), y.numpy()


def _constant(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether either side is constant (a correlation is 0 / 0 there: defined as 0, not scipy's NaN)."""
    return bool(np.ptp(x) == 0 or np.ptp(y) == 0)
