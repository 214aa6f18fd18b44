"""The GLUE metrics (scikit-learn / scipy underneath) against hand-worked values, and each task's scoring."""

from __future__ import annotations

import math

import pytest
import torch

from eva_bench.nlu.data import labelled_rows, shared_glue_path
from eva_bench.nlu.metrics import (
    SCORING,
    MetricInputError,
    TaskScoring,
    accuracy,
    f1,
    glue_metrics,
    majority_baseline,
    matthews_corrcoef,
    pearson,
    scoring,
    spearman,
)
from eva_core.errors import EvaError, InvalidConfigError
from eva_nlu.glue import TASKS

# TP = 2 (rows 0, 4), FP = 1 (row 1), FN = 1 (row 3), TN = 1 (row 2).
PREDICTED = [1, 1, 0, 0, 1]
TRUTH = [1, 0, 0, 1, 1]


def test_accuracy_by_hand() -> None:
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    assert accuracy(torch.tensor(PREDICTED), torch.tensor(TRUTH)) == pytest.approx(3 / 5)


def test_f1_by_hand() -> None:
    assert f1(PREDICTED, TRUTH) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1([1, 1, 1], [1, 1, 1]) == 1.0
    assert f1([0, 0, 1], [1, 1, 0]) == 0.0


def test_f1_is_zero_without_any_positive() -> None:
    assert f1([0, 0, 0], [0, 0, 0]) == 0.0


def test_matthews_by_hand() -> None:
    # (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3 * 3 * 2 * 2)
    assert matthews_corrcoef(PREDICTED, TRUTH) == pytest.approx(1 / 6)
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)


def test_matthews_is_zero_for_a_single_class() -> None:
    assert matthews_corrcoef([1, 1, 1, 1], [0, 1, 1, 0]) == 0.0
    assert matthews_corrcoef([0, 1, 1, 0], [1, 1, 1, 1]) == 0.0


def test_matthews_multiclass_by_hand() -> None:
    # s = 6, c = 5 (only row 3 is wrong), t = (2, 2, 2), p = (3, 1, 2): (5*6 - 12) / sqrt((36 - 14) (36 - 12))
    predicted, truth = [0, 0, 1, 0, 2, 2], [0, 0, 1, 1, 2, 2]
    assert matthews_corrcoef(predicted, truth) == pytest.approx(18 / math.sqrt(22 * 24))


def test_pearson_by_hand() -> None:
    # dx = (-1, 0, 1), dy = (-7/3, -1/3, 8/3): 5 / sqrt(2 * 114/9)
    assert pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) == pytest.approx(15 / math.sqrt(228))
    assert pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == pytest.approx(-1.0)


def test_spearman_gives_ties_their_average_rank() -> None:
    # ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    assert spearman([1.0, 4.0, 9.0, 16.0], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1.0)


def test_correlations_are_zero_for_constant_input() -> None:
    assert pearson([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) == 0.0


def test_glue_metrics_per_task() -> None:
    logits = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3], [0.9, 0.1], [0.0, 1.0]])  # arg-max = PREDICTED
    assert glue_metrics("MRPC", logits, TRUTH) == pytest.approx({"accuracy": 3 / 5, "f1": 2 / 3})
    assert glue_metrics("cola", PREDICTED, TRUTH)["matthews_corrcoef"] == pytest.approx(1 / 6)
    scores = glue_metrics("STS-B", torch.tensor([[1.0], [2.0], [3.0]]), [2.0, 4.0, 7.0])
    assert list(scores) == ["pearson", "spearman"]
    assert scores == pytest.approx({"pearson": 15 / math.sqrt(228), "spearman": 1.0})


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: accuracy([1, 0], [1]), "predictions has 2 values but labels has 1"),
        (lambda: accuracy([], []), "predictions is empty"),
        (lambda: accuracy([[1, 0]], [[1, 0]]), "shape (1, 2)"),
        (lambda: accuracy([0.5, 1.0], [1, 1]), "non-integer"),
        (lambda: f1([0, 2], [0, 1]), "class ids [2]"),
        (lambda: pearson([1.0, float("nan")], [1.0, 2.0]), "NaN"),
    ],
)
def test_bad_inputs_are_named(call, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MetricInputError) as caught:
        call()
    assert needle in str(caught.value)
    assert isinstance(caught.value, EvaError) and isinstance(caught.value, ValueError)


def test_scoring_table() -> None:
    assert sorted(SCORING) == sorted(TASKS) and all(scored.task is TASKS[name] for name, scored in SCORING.items())
    headlines = {name: scored.headline for name, scored in SCORING.items()}
    assert headlines == {
        "cola": "matthews_corrcoef",
        "sst2": "accuracy",
        "mrpc": "f1",
        "qqp": "f1",
        "stsb": "pearson",
        "mnli": "accuracy",
        "qnli": "accuracy",
        "rte": "accuracy",
    }
    assert scoring("STS-B").metrics == ("pearson", "spearman") and scoring(TASKS["mrpc"]).metrics == ("accuracy", "f1")


def test_invalid_scoring_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="headline='f1'"):
        TaskScoring(TASKS["sst2"], ("accuracy",), "f1")
    with pytest.raises(InvalidConfigError, match="regression"):
        TaskScoring(TASKS["stsb"], ("accuracy",), "accuracy")
    with pytest.raises(InvalidConfigError, match="metrics=\\('bleu',\\)"):
        TaskScoring(TASKS["sst2"], ("bleu",), "bleu")


def test_majority_baseline_by_hand() -> None:
    """Labels 1, 1, 0, 1, 0: always 1 gets 3 of 5 right; F1 = 2 TP / (2 TP + FP + FN) = 6 / (6 + 2 + 0)."""
    rows = [{"label": label} for label in (1, 1, 0, 1, 0)]
    assert majority_baseline("mrpc", rows) == pytest.approx({"accuracy": 0.6, "f1": 0.75})
    assert majority_baseline("sst2", [{"label": 0}, {"label": 1}]) == {"accuracy": 0.5}  # a tie: class 0


def test_majority_baseline_of_the_mrpc_dev_pairs_the_report_scores_on() -> None:
    """The first 256 MRPC dev pairs hold 179 paraphrases (counted in the file): always "paraphrase" gets
    F1 = 2 * 179 / (2 * 179 + 77) = 0.8230, the value 18 of the paper report's 36 MRPC runs end at."""
    rows = labelled_rows(shared_glue_path("mrpc", "dev"), "mrpc", limit=256)
    assert sum(int(row["label"]) for row in rows) == 179
    assert majority_baseline("mrpc", rows) == pytest.approx({"accuracy": 179 / 256, "f1": 358 / 435})


def test_majority_baseline_refuses_regression_and_empty_rows() -> None:
    with pytest.raises(InvalidConfigError, match="task"):
        majority_baseline("stsb", [{"label": 1.0}])
    with pytest.raises(InvalidConfigError, match="rows"):
        majority_baseline("mrpc", [])
