"""Reading GSM8K, extracting final numbers, and answer-only labels in padded batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import eva_llm
from eva_core import EvaWarning, InvalidConfigError
from eva_llm.batches import QACollator, encode
from eva_llm.data import DATA_ENV, QAProblem, data_dir, same_number


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
        ("so she earned $1,234.50 in total\n#### $1,234.50", "1234.5"),
        ("#### -3", "-3"),
        ("The answer is 7.00 apples, not 5.", "5"),
        ("First 3, then the result is 18", "18"),
        ("#### 12\nQuestion: what about 99?", "12"),
        ("no number here", None),
    ],
)
def test_final_number(text: str, number: str | None) -> None:
    assert eva_llm.final_number(text) == number


def test_same_number_never_matches_missing() -> None:
    assert same_number("72", "72")
    assert not same_number(None, None)
    assert not same_number("72", "27")


def test_reads_real_problems(problems: list[QAProblem]) -> None:
    assert len(problems) == 40
    assert problems[0].question.startswith("Natalia sold clips")
    assert problems[0].final == "72"
    assert all(p.final is not None for p in problems)
    tail = eva_llm.read_gsm8k(start=-3)
    assert len(tail) == 3 and tail[-1] == eva_llm.read_gsm8k(start=-1)[0]


def test_missing_data_folder_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(eva_llm.MissingDataError, match=DATA_ENV):
        data_dir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=DATA_ENV):
        eva_llm.read_gsm8k()


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
    assert eva_llm.answer_token_count(batch) == int(((labels != -100) & (attention == 1)).sum())
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
