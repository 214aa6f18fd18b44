"""GSM8K-style question/answer problems: reading them and comparing final numbers.

A problem is a ``question`` and a worked ``answer`` whose final number follows ``#### `` (GSM8K's
format). The real data lives outside the repository, in ``$EVA_DATA_DIR`` (default: ``shared/data``
next to the repository, as every session and CI has it); it is read, never copied.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import eva_core
import eva_core.paths

from .errors import MissingDataError

__all__ = ["DATA_ENV", "QAProblem", "data_dir", "final_number", "read_gsm8k", "same_number"]

DATA_ENV = eva_core.paths.DATA_ENV
"""Folder holding ``gsm8k/train.jsonl``; default ``../shared/data`` from the repository root."""

GSM8K_TRAIN = Path("gsm8k") / "train.jsonl"

_FINAL_MARK = "####"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class QAProblem:
    """One question and its worked answer (the final number after ``#### ``)."""

    question: str
    answer: str

    @property
    def final(self) -> str | None:
        """The reference final number, normalised (see :func:`final_number`)."""
        return final_number(self.answer)


def data_dir() -> Path:
    """``$EVA_DATA_DIR``, else the ``shared/data`` folder beside the repository (see :func:`eva_core.data_dir`).

    Raises:
        MissingDataError: the folder does not exist; the message names ``EVA_DATA_DIR``.
    """
    return eva_core.data_dir(anchor=__file__)


def read_gsm8k(
    path: str | os.PathLike[str] | None = None, *, start: int = 0, count: int | None = None
) -> list[QAProblem]:
    """Problems ``start .. start + count`` of a GSM8K-style JSON-lines file (``question``, ``answer``).

    Args:
        path: the file; default ``data_dir() / "gsm8k/train.jsonl"``.
        start: index of the first problem to keep (a negative value counts from the end).
        count: how many to keep; None keeps the rest.

    Raises:
        MissingDataError: the file does not exist.
        ValueError: a line lacks ``question`` or ``answer``.
    """
    file = Path(path) if path is not None else data_dir() / GSM8K_TRAIN
    if not file.is_file():
        raise MissingDataError(
            f"read_gsm8k(path={str(file)!r}): no such file; set {DATA_ENV} to the folder holding "
            f"{GSM8K_TRAIN.as_posix()} or pass the path of a JSON-lines file."
        )
    problems = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            item = json.loads(line)
            if not isinstance(item.get("question"), str) or not isinstance(item.get("answer"), str):
                raise ValueError(
                    f"{file}:{number} has no string 'question' and 'answer'; each line must be a JSON object "
                    'like {"question": "...", "answer": "... #### 42"}.'
                )
            problems.append(QAProblem(question=item["question"], answer=item["answer"]))
    stop = None if count is None else (start + count if start + count != 0 else None)
    return problems[start:stop]


def final_number(text: str) -> str | None:
    """The final number of a reference or generated answer, normalised, or None if there is none.

    The number right after the last ``####`` wins; without that mark, the last number in ``text``.
    ``$``, thousands separators and trailing zeros are dropped: ``"#### $1,234.50"`` -> ``"1234.5"``.
    """
    tail = text.rsplit(_FINAL_MARK, 1)[1] if _FINAL_MARK in text else text
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    raw = numbers[0] if _FINAL_MARK in text else numbers[-1]
    return _normalise(raw)


def same_number(predicted: str | None, reference: str | None) -> bool:
    """Exact match of two normalised final numbers (None never matches)."""
    return predicted is not None and reference is not None and predicted == reference


def _normalise(raw: str) -> str | None:
    cleaned = raw.replace("$", "").replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(value.to_integral_value())
    return format(value.normalize(), "f")
