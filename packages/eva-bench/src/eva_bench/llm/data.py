"""GSM8K for the llm benchmarks: reading the shared copy and comparing final numbers.

A problem is a ``question`` and a worked ``answer`` whose final number follows ``#### `` (GSM8K's
format). The real data lives outside the repository, in ``$EVA_DATA_DIR`` (default: ``shared/data``
next to the repository, as every session and CI has it); it is read (through ``datasets``' JSON builder,
:func:`eva_llm.read_problems`), never copied.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from eva_core.errors import MissingDataError
from eva_llm import QAProblem, read_problems

from ..paths import DATA_ENV, data_dir

__all__ = ["GSM8K_TRAIN", "final_number", "read_gsm8k", "same_number"]

GSM8K_TRAIN = Path("gsm8k") / "train.jsonl"
"""The shared GSM8K copy (a training split only), relative to :func:`eva_bench.paths.data_dir`."""

# GSM8K's answer format has no reader in a library we use: the final number is parsed here.
_FINAL_MARK = "####"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def read_gsm8k(
    path: str | os.PathLike[str] | None = None, *, start: int = 0, count: int | None = None
) -> list[QAProblem]:
    """Problems ``start .. start + count`` of a GSM8K-style JSON-lines file (``question``, ``answer``).

    Args:
        path: the file; default ``data_dir() / "gsm8k/train.jsonl"``.
        start: index of the first problem to keep (a negative value counts from the end).
        count: how many to keep; None keeps the rest.

    Raises:
        MissingDataError: the file (or the data folder) does not exist; the message names ``EVA_DATA_DIR``.
        eva_core.errors.UnreadableDataError: a line is not JSON or lacks ``question`` or ``answer``.
    """
    file = Path(path) if path is not None else data_dir(anchor=__file__) / GSM8K_TRAIN
    if not file.is_file():
        raise MissingDataError(
            f"read_gsm8k(path={str(file)!r}): no such file; set {DATA_ENV} to the folder holding "
            f"{GSM8K_TRAIN.as_posix()} or pass the path of a JSON-lines file."
        )
    problems = read_problems(file)
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
