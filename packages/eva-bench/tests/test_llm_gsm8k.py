"""Reading the shared GSM8K copy and extracting final numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from eva_bench.llm.data import final_number, read_gsm8k, same_number
from eva_bench.paths import DATA_ENV
from eva_core.errors import MissingDataError


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
    assert final_number(text) == number


def test_same_number_never_matches_missing() -> None:
    assert same_number("72", "72")
    assert not same_number(None, None)
    assert not same_number("72", "27")


def test_reads_real_problems() -> None:
    problems = read_gsm8k(count=40)
    assert len(problems) == 40
    assert problems[0].question.startswith("Natalia sold clips")
    assert final_number(problems[0].answer) == "72"
    assert all(final_number(p.answer) is not None for p in problems)
    assert read_gsm8k(start=5, count=2) == problems[5:7]
    tail = read_gsm8k(start=-3)
    assert len(tail) == 3 and tail[-1] == read_gsm8k(start=-1)[0]


def test_missing_data_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError, match=DATA_ENV):
        read_gsm8k()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=DATA_ENV):
        read_gsm8k()
