"""The GLUE metrics, in torch: accuracy, binary F1, Matthews correlation, Pearson and Spearman.

Every function takes predictions and references as sequences of numbers or 1-D tensors of equal
length ``N`` and returns a Python ``float``. The degenerate cases, where a formula divides by zero,
are defined rather than NaN, so a collapsed model scores as uninformative instead of poisoning a
"best checkpoint" comparison:

- ``f1`` is 0 when there is no positive among the predictions nor the references (``2TP+FP+FN = 0``),
  as scikit-learn's ``f1_score(..., zero_division=0)``;
- ``matthews_corrcoef`` is 0 when the predictions or the references hold a single class, as
  scikit-learn's ``matthews_corrcoef``;
- ``pearson`` and ``spearman`` are 0 when either side is constant (scipy returns NaN there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from eva_core.errors import EvaError

from .tasks import GlueTask, get_task

__all__ = [
    "MetricInputError",
    "Values",
    "accuracy",
    "f1",
    "glue_metrics",
    "matthews_corrcoef",
    "pearson",
    "spearman",
]

Values = Sequence[float] | Sequence[int] | torch.Tensor
"""(N,) numbers: a list, a tuple or a 1-D tensor."""


class MetricInputError(EvaError, ValueError):
    """Predictions and references cannot be scored: empty, of different lengths or of the wrong kind."""


def accuracy(predictions: Values, labels: Values) -> float:
    """The fraction of ``predictions`` equal to ``labels``: (N,), (N,) -> float in [0, 1]."""
    predicted, truth = _classes(predictions, labels)
    return (predicted == truth).double().mean().item()


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
        if ((values != 0) & (values != 1)).any():
            bad = sorted({int(v) for v in values.unique().tolist()} - {0, 1})
            raise MetricInputError(f"f1 is binary: {name} holds class ids {bad}; pass ids in {{0, 1}}")
    true_positive = ((predicted == 1) & (truth == 1)).sum().item()
    false_positive = ((predicted == 1) & (truth == 0)).sum().item()
    false_negative = ((predicted == 0) & (truth == 1)).sum().item()
    denominator = 2 * true_positive + false_positive + false_negative
    return 2 * true_positive / denominator if denominator else 0.0


def matthews_corrcoef(predictions: Values, labels: Values) -> float:
    """Matthews correlation of class ids, binary or multiclass (Gorodkin's R_K); 0 when undefined.

    With ``C`` the confusion matrix, ``s = N`` samples, ``c = trace(C)`` correct, ``t`` the true and ``p``
    the predicted count of each class::

        MCC = (c s - t . p) / sqrt((s^2 - p . p) (s^2 - t . t))

    which for two classes is ``(TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN))``.
    """
    predicted, truth = _classes(predictions, labels)
    classes = int(max(predicted.max().item(), truth.max().item(), 0)) + 1
    if predicted.min() < 0 or truth.min() < 0:
        raise MetricInputError("matthews_corrcoef takes class ids >= 0; got a negative id")
    true_counts = torch.bincount(truth, minlength=classes).double()  # (K,)
    predicted_counts = torch.bincount(predicted, minlength=classes).double()  # (K,)
    samples = float(truth.numel())
    correct = (predicted == truth).sum().double()
    covariance = correct * samples - true_counts @ predicted_counts
    spread = (samples**2 - predicted_counts @ predicted_counts) * (samples**2 - true_counts @ true_counts)
    return (covariance / spread.sqrt()).item() if spread > 0 else 0.0


def pearson(predictions: Values, labels: Values) -> float:
    """Pearson correlation ``cov(x, y) / (std(x) std(y))`` of (N,), (N,); 0 when either is constant."""
    x, y = _reals(predictions, labels)
    return _correlation(x, y)


def spearman(predictions: Values, labels: Values) -> float:
    """Spearman rank correlation: Pearson of the ranks, tied values sharing their average rank."""
    x, y = _reals(predictions, labels)
    return _correlation(_average_ranks(x), _average_ranks(y))


_METRICS: dict[str, Callable[[Values, Values], float]] = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_corrcoef": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def glue_metrics(task: str | GlueTask, predictions: Values, labels: Values) -> dict[str, float]:
    """Every metric of ``task`` (``task.metrics``, in that order; ``task.headline`` is one of them).

    Args:
        task: a :class:`GlueTask` or its name (``"sst2"``, ``"STS-B"``...).
        predictions: classification: (N,) class ids or (N, K) logits / probabilities (arg-maxed);
            regression: (N,) or (N, 1) scores.
        labels: (N,) class ids or scores.

    Returns:
        ``{metric name: value}``, e.g. ``{"accuracy": 0.84, "f1": 0.88}`` for MRPC.
    """
    glue_task = get_task(task)
    scored = torch.as_tensor(predictions) if not isinstance(predictions, torch.Tensor) else predictions.detach()
    if scored.dim() == 2:
        if glue_task.is_regression and scored.shape[1] == 1:
            scored = scored[:, 0]  # (N,)
        elif not glue_task.is_regression:
            scored = scored.argmax(dim=-1)  # (N, K) -> (N,)
    return {name: _METRICS[name](scored, labels) for name in glue_task.metrics}


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


def _classes(predictions: Values, labels: Values) -> tuple[torch.Tensor, torch.Tensor]:
    """Class ids as int64 (N,), (N,); floats are accepted when they are whole numbers."""
    pair = _pair(predictions, labels)
    for name, values in zip(("predictions", "labels"), pair, strict=True):
        if values.is_floating_point() and not torch.equal(values, values.round()):
            raise MetricInputError(
                f"{name} holds non-integer values such as {values[values != values.round()][0].item()!r}; "
                "pass class ids (arg-max logits first, or use glue_metrics which does it)"
            )
    return pair[0].long(), pair[1].long()


def _reals(predictions: Values, labels: Values) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 (N,), (N,), finite."""
    x, y = (values.double() for values in _pair(predictions, labels))
    for name, values in (("predictions", x), ("labels", y)):
        if not torch.isfinite(values).all():
            raise MetricInputError(f"{name} holds NaN or infinite values; pass finite scores")
    return x, y


def _correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    dx, dy = x - x.mean(), y - y.mean()  # (N,), (N,)
    spread = (dx @ dx) * (dy @ dy)
    if spread <= 0:
        return 0.0
    return ((dx @ dy) / spread.sqrt()).clamp(-1.0, 1.0).item()


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of (N,) values, tied values sharing the mean of the ranks they span: (N,) -> (N,)."""
    ordered, order = torch.sort(values, stable=True)
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)  # (G,)
    last = torch.cumsum(counts, 0).double()  # (G,) 1-based rank of each group's last member
    first = last - counts.double() + 1.0
    ranks = torch.empty_like(values)
    ranks[order] = ((first + last) / 2.0)[inverse]
    return ranks
