"""The llm evaluation: answer-token loss against transformers' own causal-LM loss, token-weighted
held-out loss, exact match of greedy answers; and, on SmolLM2-135M with real GSM8K problems, a few
training steps lower the held-out answer loss."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

import eva_bench
import eva_llm
from eva_bench.llm.data import read_gsm8k
from eva_bench.llm.evaluation import answer_loss, exact_match, generate_answers, held_out_loss
from eva_core.errors import EmptyDataError


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    torch.set_num_threads(1)
    return eva_llm.load_causal_lm(eva_llm.smollm2_checkpoint())


@pytest.fixture(scope="module")
def batches(smollm2: tuple[Any, Any]) -> list[dict[str, torch.Tensor]]:
    return list(eva_llm.qa_loader(smollm2[1], read_gsm8k(count=6), 3, max_length=160))


def test_answer_loss_is_transformers_causal_lm_loss(smollm2: tuple[Any, Any], batches: list[Any]) -> None:
    model, _ = smollm2
    with torch.no_grad():
        reference = model(**batches[0]).loss  # shifts the labels, skips -100, averages over the tokens left
        torch.testing.assert_close(answer_loss(model, batches[0]), reference, rtol=1e-5, atol=1e-5)


def test_held_out_loss_weights_tokens_not_batches(smollm2: tuple[Any, Any], batches: list[Any]) -> None:
    model, _ = smollm2
    with torch.no_grad():
        per_batch = [(float(answer_loss(model, b)), int((b["labels"][:, 1:] != -100).sum())) for b in batches]
    expected = sum(loss * count for loss, count in per_batch) / sum(count for _, count in per_batch)
    assert held_out_loss(model, batches) == pytest.approx(expected, rel=1e-5)
    unlabelled = {**batches[0], "labels": torch.full_like(batches[0]["labels"], -100)}
    with pytest.raises(EmptyDataError, match="no answer token"):
        held_out_loss(model, [unlabelled])


def test_exact_match_scores_the_final_number_of_greedy_answers(smollm2: tuple[Any, Any]) -> None:
    model, tokenizer = smollm2
    problems = read_gsm8k(count=2)
    answers = generate_answers(model, tokenizer, [p.question for p in problems], max_new_tokens=3, batch_size=2)
    alone = generate_answers(model, tokenizer, [problems[1].question], max_new_tokens=3)
    assert len(answers) == 2 and answers[1] == alone[0]  # left padding changes no answer
    score = exact_match(model, tokenizer, problems, max_new_tokens=3)
    assert score in (0.0, 0.5, 1.0)
    with pytest.raises(EmptyDataError, match="problems=\\[\\]"):
        exact_match(model, tokenizer, [])


def test_training_lowers_the_held_out_answer_loss(smollm2: tuple[Any, Any]) -> None:
    _, tokenizer = smollm2
    model, _ = eva_llm.load_causal_lm(eva_llm.smollm2_checkpoint())  # a fresh copy: peft wraps it in place
    torch.manual_seed(0)
    fit_batches = list(eva_llm.qa_loader(tokenizer, read_gsm8k(count=12), 4, max_length=192))
    eval_batches = list(eva_llm.qa_loader(tokenizer, read_gsm8k(start=-4), 4, max_length=256))
    peft_model = eva_llm.init(model, fit_batches, rank=4, max_steps=2, min_steps=2, tau=0.0, progress=False)
    curve = eva_bench.train(
        peft_model,
        itertools.cycle(fit_batches),
        answer_loss,
        lambda adapted: {"loss": held_out_loss(adapted, eval_batches)},
        steps=4,
        eval_at=(0, 4),
        lr=2e-3,
    )
    before, after = (point.metrics["loss"] for point in curve)
    assert after < before
