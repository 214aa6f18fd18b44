"""The GLUE fine-tuning run on real all-MiniLM-L6-v2 weights and real MRPC pairs, every quick method."""

from __future__ import annotations

import argparse

import pytest
import torch

import eva_bench
from eva_bench.comparison import parse
from eva_bench.nlu import run_from_args
from eva_bench.nlu.data import shared_glue_path
from eva_bench.nlu.recipe import evaluate, finetune


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")
@pytest.mark.parametrize("method", ["eva", "lora", "pissa", "olora"])
def test_the_recipe_runs_every_method_on_real_mrpc_pairs(method: str) -> None:
    record = finetune(
        "minilm",
        "mrpc",
        method,
        train=shared_glue_path("mrpc", "train"),
        dev=shared_glue_path("mrpc", "dev"),
        steps=3,
        eval_at=[0, 3],
        train_limit=64,
        dev_limit=32,
        batch_size=16,
        rank=2,
    )
    assert isinstance(record, eva_bench.RunRecord)
    assert record.metric == "f1" and [p.step for p in record.curve] == [0, 3]
    assert set(record.curve[-1].metrics) >= {"f1", "accuracy", "loss"}
    assert 0.0 <= record.final() <= 1.0
    if method == "eva":
        assert set(record.extra) >= {"ranks", "eva_batches"} and sum(record.extra["ranks"].values()) == 2 * 36
        assert record.extra["eva_batches"] <= 4  # the 64 training rows, read once
    else:
        head = 384 * 2 + 2  # the new classifier, trained in full
        assert record.trainable_parameters == _lora_count(2) + head


def _lora_count(rank: int) -> int:
    """LoRA parameters at rank r on MiniLM's 36 block linears: r * (d_in + d_out) per layer."""
    per_block = 4 * (384 + 384) + (384 + 1536) + (1536 + 384)
    return 6 * rank * per_block


class _Constant(torch.nn.Module):
    """A 'model' whose logits are fixed: (B, K) rows of ``logits``."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = torch.tensor(logits)

    def forward(self, input_ids: torch.Tensor) -> argparse.Namespace:
        return argparse.Namespace(logits=self.logits.expand(input_ids.shape[0], -1))


def test_evaluate_scores_the_logits_by_hand() -> None:
    batches = [{"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.tensor([1, 1, 0, 1])}]
    metrics = evaluate(_Constant([0.0, 1.0]), batches, "mrpc")  # always predicts class 1
    assert metrics["accuracy"] == pytest.approx(3 / 4) and metrics["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))
    # cross-entropy of logits (0, 1): -log softmax = log(1 + e) for class 0, log(1 + e^-1) for class 1
    expected = (3 * torch.log1p(torch.tensor(-1.0).exp()) + torch.log1p(torch.tensor(1.0).exp())) / 4
    assert metrics["loss"] == pytest.approx(float(expected))
    scores = evaluate(
        _Constant([2.0]),
        [{"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": torch.tensor([1.0, 3.0])}],
        "stsb",
    )
    assert scores["loss"] == pytest.approx((1.0 + 1.0) / 2) and scores["pearson"] == 0.0  # constant predictions


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")
def test_run_from_args_reads_the_shared_glue_split() -> None:
    small = "--steps 1 --eval-at 1 --rank 2 --lr 1e-3 --batch-size 8 --train-limit 16 --dev-limit 8"
    args = parse(["nlu", "--model", "minilm", "--task", "sst2", *small.split(), "--out", "unused"])
    record = run_from_args(args, "lora", seed=0)
    assert record.metric == "accuracy" and [p.step for p in record.curve] == [1] and record.seed == 0


def test_a_validation_split_takes_the_curve_and_dev_is_scored_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``validation`` rows follow the first ``train_limit`` training rows, score every curve point and are
    never trained on; the dev rows are scored once, after the last step."""
    from eva_bench.nlu import recipe

    scored: list[int] = []
    original = recipe.evaluate
    monkeypatch.setattr(
        recipe, "evaluate", lambda m, b, t: scored.append(sum(len(x["labels"]) for x in b)) or original(m, b, t)
    )
    record = finetune(
        "minilm", "sst2", "lora", train=shared_glue_path("sst2", "train"), dev=shared_glue_path("sst2", "dev"),
        steps=2, eval_at=[0, 1, 2], train_limit=24, validation=10, dev_limit=6, batch_size=8, rank=2,
    )  # fmt: skip
    assert scored == [10, 10, 10, 6]
    assert record.held_out is not None and set(record.held_out) >= {"accuracy", "loss"}
    assert record.held_out["accuracy"] in {k / 6 for k in range(7)}
