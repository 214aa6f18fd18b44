"""The GLUE tasks: which text fields a row holds, how it is labelled and how predictions are scored.

Field names follow the ``glue`` configurations of the Hugging Face ``datasets`` hub (``sentence``;
``sentence1``/``sentence2``; ``question1``/``question2``; ``premise``/``hypothesis``;
``question``/``sentence``), so rows from ``datasets.load_dataset("glue", ...)`` need no renaming.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from eva_core.errors import InvalidConfigError

__all__ = ["METRIC_NAMES", "GlueTask", "TASKS", "get_task"]

METRIC_NAMES: tuple[str, ...] = ("accuracy", "f1", "matthews_corrcoef", "pearson", "spearman")
_CLASSIFICATION_METRICS = frozenset({"accuracy", "f1", "matthews_corrcoef"})


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task.

    Args:
        name: the canonical lower-case name (``sst2``, ``stsb``...), as ``datasets`` spells it.
        folder: the folder of the original GLUE release (``SST-2``, ``STS-B``...).
        text_keys: the row keys of the text, one (single sentence) or two (a sentence pair, encoded
            as a pair: ``[CLS] a [SEP] b [SEP]``).
        num_labels: classes of a classification task; 1 means regression (STS-B scores in [0, 5]).
        metrics: the metrics reported on held-out data, names from :data:`METRIC_NAMES`.
        headline: the one metric GLUE ranks the task by; one of ``metrics``.
        label_names: the class names in label order (``label_names[i]`` is class ``i``), so files
            that spell labels out (``entailment``) can be read; empty for regression.
        label_key: the row key of the label.

    Raises:
        InvalidConfigError: a field is outside its valid range.
    """

    name: str
    folder: str
    text_keys: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    headline: str
    label_names: tuple[str, ...] = ()
    label_key: str = "label"

    def __post_init__(self) -> None:
        _require(len(self.text_keys) in (1, 2), "text_keys", self.text_keys, "one key, or two for a sentence pair")
        _require(
            isinstance(self.num_labels, int) and self.num_labels >= 1,
            "num_labels",
            self.num_labels,
            "an integer >= 1 (1 for regression)",
        )
        unknown = [metric for metric in self.metrics if metric not in METRIC_NAMES]
        _require(bool(self.metrics) and not unknown, "metrics", self.metrics, f"names from {METRIC_NAMES}")
        if self.is_regression:
            wrong = [metric for metric in self.metrics if metric in _CLASSIFICATION_METRICS]
            _require(not wrong, "metrics", self.metrics, "pearson/spearman for a regression task (num_labels=1)")
        _require(self.headline in self.metrics, "headline", self.headline, f"one of metrics={self.metrics}")
        _require(
            self.is_regression or not self.label_names or len(self.label_names) == self.num_labels,
            "label_names",
            self.label_names,
            f"{self.num_labels} names (one per class) or none",
        )

    @property
    def is_regression(self) -> bool:
        """Whether the label is a real number (``num_labels == 1``) rather than a class id."""
        return self.num_labels == 1

    @property
    def is_pair(self) -> bool:
        """Whether a row holds a sentence pair."""
        return len(self.text_keys) == 2


def _require(condition: bool, name: str, value: object, fix: str) -> None:
    if not condition:
        raise InvalidConfigError(f"GlueTask {name}={value!r} is invalid; use {fix}")


_ALL: tuple[GlueTask, ...] = (
    GlueTask("cola", "CoLA", ("sentence",), 2, ("matthews_corrcoef", "accuracy"), "matthews_corrcoef",
             ("unacceptable", "acceptable")),
    GlueTask("sst2", "SST-2", ("sentence",), 2, ("accuracy",), "accuracy", ("negative", "positive")),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("accuracy", "f1"), "f1",
             ("not_equivalent", "equivalent")),
    GlueTask("qqp", "QQP", ("question1", "question2"), 2, ("accuracy", "f1"), "f1", ("not_duplicate", "duplicate")),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), 1, ("pearson", "spearman"), "pearson"),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), 3, ("accuracy",), "accuracy",
             ("entailment", "neutral", "contradiction")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), 2, ("accuracy",), "accuracy", ("entailment", "not_entailment")),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), 2, ("accuracy",), "accuracy", ("entailment", "not_entailment")),
)  # fmt: skip

TASKS: Mapping[str, GlueTask] = MappingProxyType({task.name: task for task in _ALL})
"""Every GLUE task by canonical name (read-only)."""


def _normalize(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def get_task(task: str | GlueTask) -> GlueTask:
    """The task named ``task``, spelled any common way: ``"SST-2"``, ``"sst2"``, ``"sst-2"``, ``"STS_B"``.

    A :class:`GlueTask` is returned as it is, so functions can take either.

    Raises:
        InvalidConfigError: no known task has that name; the message lists the known ones.
    """
    if isinstance(task, GlueTask):
        return task
    if isinstance(task, str):
        found = TASKS.get(_normalize(task))
        if found is not None:
            return found
    known = ", ".join(sorted(TASKS))
    raise InvalidConfigError(f"task={task!r} is not a known GLUE task; use one of: {known} (or a GlueTask)")
