"""GLUE-style data for ``eva-lora fit`` (a helper of the cli role): each task's text columns and label count,
and reading a ``.tsv``/``.csv``/``.jsonl`` file through the ``datasets`` library's csv and json builders.

Text keys follow the ``glue`` configurations of the Hugging Face ``datasets`` hub (``sentence``;
``sentence1``/``sentence2``; ``question1``/``question2``; ``premise``/``hypothesis``;
``question``/``sentence``), so rows from ``datasets.load_dataset("glue", ...)`` need no renaming; files
as GLUE ships them are read too (headerless MRPC and CoLA, MRPC's ``#1 String`` columns).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from eva_core.errors import InvalidConfigError, MissingDataError

from .errors import DataFormatError

if TYPE_CHECKING:
    import datasets

__all__ = ["SUFFIXES", "TASKS", "GlueTask", "get_task", "read_rows", "read_table", "row_text", "text_columns"]

SUFFIXES: tuple[str, ...] = (".tsv", ".csv", ".jsonl")
"""The file kinds :func:`read_table` reads."""

# Names the original GLUE files use for the ``datasets`` field names.
_TEXT_ALIASES: Mapping[str, tuple[str, ...]] = {
    "sentence1": ("#1 String",),
    "sentence2": ("#2 String",),
    "premise": ("sentence1",),
    "hypothesis": ("sentence2",),
}
_MRPC_COLUMNS = ("label", "id1", "id2", "sentence1", "sentence2")
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: what a row holds and how many classes its head needs.

    Args:
        name: the canonical lower-case name (``sst2``, ``stsb``...), as ``datasets`` spells it.
        folder: the folder of the original GLUE release (``SST-2``, ``STS-B``...).
        text_keys: the row keys of the text, one (single sentence) or two (a sentence pair, encoded
            as a pair: ``[CLS] a [SEP] b [SEP]``).
        num_labels: classes of a classification task (the head's outputs); 1 means regression (STS-B).
        label_names: the class names in label order (``label_names[i]`` is class ``i``); empty for regression.

    Raises:
        InvalidConfigError: a field is outside its valid range.
    """

    name: str
    folder: str
    text_keys: tuple[str, ...]
    num_labels: int
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(len(self.text_keys) in (1, 2), "text_keys", self.text_keys, "one key, or two for a sentence pair")
        _require(
            isinstance(self.num_labels, int) and self.num_labels >= 1,
            "num_labels",
            self.num_labels,
            "an integer >= 1 (1 for regression)",
        )
        _require(
            not self.label_names or len(self.label_names) == self.num_labels > 1,
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
    GlueTask("cola", "CoLA", ("sentence",), 2, ("unacceptable", "acceptable")),
    GlueTask("sst2", "SST-2", ("sentence",), 2, ("negative", "positive")),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), 2, ("not_equivalent", "equivalent")),
    GlueTask("qqp", "QQP", ("question1", "question2"), 2, ("not_duplicate", "duplicate")),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), 1),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), 3, ("entailment", "neutral", "contradiction")),
    GlueTask("qnli", "QNLI", ("question", "sentence"), 2, ("entailment", "not_entailment")),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), 2, ("entailment", "not_entailment")),
)

TASKS: Mapping[str, GlueTask] = MappingProxyType({task.name: task for task in _ALL})
"""Every GLUE task by canonical name (read-only)."""


def get_task(task: str | GlueTask) -> GlueTask:
    """The task named ``task``, spelled any common way: ``"SST-2"``, ``"sst2"``, ``"sst-2"``, ``"STS_B"``.

    A :class:`GlueTask` is returned as it is, so functions can take either.

    Raises:
        InvalidConfigError: no known task has that name; the message lists the known ones.
    """
    if isinstance(task, GlueTask):
        return task
    if isinstance(task, str):
        found = TASKS.get(re.sub(r"[\s_\-]", "", task).lower())
        if found is not None:
            return found
    known = ", ".join(sorted(TASKS))
    raise InvalidConfigError(f"task={task!r} is not a known GLUE task; use one of: {known} (or a GlueTask)")


def read_rows(path: str | os.PathLike[str], task: str | GlueTask, *, limit: int | None = None) -> list[dict[str, str]]:
    """The text of every row of a GLUE-style file: N dicts of ``task.text_keys`` (labels are not read).

    Args:
        path: a ``.tsv`` (read with quoting off, as GLUE needs), ``.csv`` or ``.jsonl`` file (see :func:`read_table`).
        task: the task or its name.
        limit: read at most this many rows; ``None`` reads all.

    Raises:
        DataFormatError: a text column is missing or a text is not a string (the message names the row).
        MissingDataError: the file does not exist.
    """
    glue_task = get_task(task)
    table = read_table(path, glue_task, limit=limit).select_columns(list(glue_task.text_keys))
    where = f"of file {path}"
    return [
        {key: row_text(value, key, f"row {index} {where}") for key, value in row.items()}
        for index, row in enumerate(table)
    ]


def read_table(path: str | os.PathLike[str], task: str | GlueTask, *, limit: int | None = None) -> datasets.Dataset:
    """Every column of a GLUE-style file, through ``datasets``' csv or json builder, the task's text keys
    among them (original GLUE column names are renamed: ``#1 String`` -> ``sentence1``...).

    ``.tsv`` and ``.csv`` files have a header row, or are GLUE's headerless MRPC (``label, id1, id2,
    sentence1, sentence2``) or CoLA (``source, label, original_label, sentence``); their cells are read
    as strings, exactly as written (no quoting in a ``.tsv``: SST-2 and MRPC sentences hold ``"``; no
    ``NA`` detection). ``.jsonl`` values keep their JSON types.

    Args:
        path: the file.
        task: the task or its name.
        limit: keep at most this many rows; ``None`` keeps all.

    Raises:
        DataFormatError: the file has another suffix, is empty, cannot be parsed (the message names the
            line) or lacks a text column the task needs.
        MissingDataError: the file does not exist.
    """
    glue_task, file = get_task(task), Path(path)
    if limit is not None and not (isinstance(limit, int) and limit >= 0):
        raise InvalidConfigError(f"limit={limit!r} is invalid; use an integer >= 0, or None to read every row")
    if not file.is_file():
        raise MissingDataError(f"path={str(file)!r} is not a file; pass the path of a .tsv, .csv or .jsonl file")
    if file.suffix.lower() not in SUFFIXES:
        raise DataFormatError(f"file {file} has suffix {file.suffix!r}; use a .tsv, .csv or .jsonl file")
    table = _load(file)
    if limit is not None and limit < len(table):
        table = table.select(range(limit))
    return _renamed(table, glue_task, f"file {file}")


def _load(file: Path) -> datasets.Dataset:
    import datasets  # loaded on first use: importing eva_nlu (every `eva` plugin load) stays light
    from datasets.exceptions import DatasetGenerationError

    lines = _first_lines(file)
    if not lines:
        raise DataFormatError(f"file {file} is empty; pass a file with a header row and data rows")
    try:
        if file.suffix.lower() == ".jsonl":
            return datasets.load_dataset("json", data_files=str(file), split="train")
        tabs = file.suffix.lower() == ".tsv"
        first = lines[0].split("\t") if tabs else next(csv.reader(lines[:1]))
        names, headerless = _header(first)
        features = datasets.Features({name: datasets.Value("string") for name in names})
        if len(lines) == 1 and not headerless:  # a header alone: the builder refuses a file without data
            return datasets.Dataset.from_dict({name: [] for name in names}, features=features)
        return datasets.load_dataset(
            "csv",
            data_files=str(file),
            split="train",
            delimiter="\t" if tabs else ",",
            quoting=csv.QUOTE_NONE if tabs else csv.QUOTE_MINIMAL,
            header=None if headerless else 0,
            names=list(names),
            features=features,
            na_filter=False,  # text stays as written: "null", "NA" and "" are sentences, not missing values
            encoding="utf-8-sig",
        )
    except DatasetGenerationError as error:
        cause = str(error.__cause__ or error).strip()
        raise DataFormatError(f"file {file} cannot be read: {cause}; check for a stray tab, comma or quote") from None


def _first_lines(file: Path) -> list[str]:
    """Up to the first two non-blank lines, without their line ends."""
    found: list[str] = []
    with file.open(encoding="utf-8-sig") as handle:
        for line in handle:
            if line.strip():
                found.append(line.rstrip("\r\n"))
                if len(found) == 2:
                    break
    return found


def _header(first: list[str]) -> tuple[tuple[str, ...], bool]:
    """The column names, and whether ``first`` is a data row of a headerless GLUE file (MRPC, CoLA).

    Written by hand: a reader cannot tell a header from a first data row; these are GLUE's own layouts.
    """
    if len(first) == 5 and first[0].strip().isdigit():
        return _MRPC_COLUMNS, True
    if len(first) == 4 and first[1].strip() in ("0", "1") and first[2].strip() in ("", "*", "?", "??"):
        return _COLA_COLUMNS, True
    return tuple(name.strip() for name in first), False


def _renamed(table: datasets.Dataset, task: GlueTask, origin: str) -> datasets.Dataset:
    """``table`` with the task's text keys as column names (from their GLUE aliases where needed)."""
    renames = {column: key for key, column in text_columns(table.column_names, task, origin).items() if column != key}
    return table.rename_columns(renames) if renames else table


def text_columns(available: Sequence[str], task: GlueTask, origin: str) -> dict[str, str]:
    """Which of the ``available`` columns holds each text key of ``task``: ``{text key: column}``, the key
    itself or its name in the original GLUE files (``#1 String`` for ``sentence1``, ``sentence1`` for
    MNLI's ``premise``...).

    Raises:
        DataFormatError: a text key has no column; the message names it and ``origin``.
    """
    columns: dict[str, str] = {}
    for key in task.text_keys:
        found = next((name for name in (key, *_TEXT_ALIASES.get(key, ())) if name in available), None)
        if found is None:
            raise DataFormatError(
                f"{origin} has no {key!r} column, which task {task.name} needs (columns: {', '.join(available)}); "
                f"rename the text column(s) to {', '.join(task.text_keys)}"
            )
        columns[key] = found
    return columns


def row_text(value: object, column: str, where: str) -> str:
    """``value`` if it is a string.

    Raises:
        DataFormatError: it is not; the message names ``column`` and ``where``.
    """
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {column}={value!r} is a {type(value).__name__}; pass the text as str")
    return value
