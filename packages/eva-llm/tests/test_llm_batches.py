"""Question/answer problems to batches: answer-only labels, right padding, reproducible order."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import eva_llm
from eva_core import EvaWarning
from eva_core.errors import InvalidConfigError
from eva_llm import QACollator, QAProblem
from eva_llm.batches import answer_token_count, encode


@pytest.mark.parametrize("template", ["chat", "plain"])
def test_labels_are_the_answer_only(smollm2_tokenizer: Any, problems: list[QAProblem], template: str) -> None:
    tokenizer, problem = smollm2_tokenizer, problems[0]
    example = encode(tokenizer, problem, template)
    assert example is not None
    prompt = eva_llm.prompt_text(tokenizer, problem.question, template)
    prompt_length = sum(label == -100 for label in example.labels)
    assert example.labels[:prompt_length] == [-100] * prompt_length
    assert tokenizer.decode(example.input_ids[:prompt_length]).endswith(prompt)
    answer = tokenizer.decode(example.labels[prompt_length:])
    assert problem.answer in answer
    assert answer.rstrip().endswith(tokenizer.eos_token)


def test_batches_are_right_padded_with_masked_labels(smollm2_tokenizer: Any, problems: list[QAProblem]) -> None:
    batch = QACollator(smollm2_tokenizer, max_length=160)(problems[:4])
    input_ids, attention, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert input_ids.shape == attention.shape == labels.shape and input_ids.shape[0] == 4
    lengths = attention.sum(dim=1)
    for row, length in enumerate(lengths.tolist()):
        assert attention[row, :length].all() and not attention[row, length:].any()  # right padding
        assert (labels[row, length:] == -100).all()
        assert (input_ids[row, length:] == smollm2_tokenizer.pad_token_id).all()
    assert (labels[:, 0] == -100).all()  # every example starts with its prompt
    assert answer_token_count(batch) == int(((labels != -100) & (attention == 1)).sum())
    assert input_ids.shape[1] <= 160


def test_loader_is_reproducible(smollm2_tokenizer: Any, problems: list[QAProblem]) -> None:
    def first_ids(seed: int) -> torch.Tensor:
        loader = eva_llm.qa_loader(smollm2_tokenizer, problems[:12], 4, shuffle=True, seed=seed, max_length=256)
        return next(iter(loader))["input_ids"]

    assert torch.equal(first_ids(3), first_ids(3))
    assert not torch.equal(first_ids(3), first_ids(4))


def test_bad_arguments_name_the_fix(smollm2_tokenizer: Any, problems: list[QAProblem]) -> None:
    with pytest.raises(InvalidConfigError, match="template='wiki'"):
        QACollator(smollm2_tokenizer, template="wiki")
    with pytest.raises(InvalidConfigError, match="batch_size=0"):
        eva_llm.qa_loader(smollm2_tokenizer, problems, 0)
    with pytest.warns(EvaWarning, match="max_length=40"):
        batch = QACollator(smollm2_tokenizer, max_length=40)([*problems[:3], QAProblem("x", "#### 1")])
    assert batch["input_ids"].shape[0] >= 1
