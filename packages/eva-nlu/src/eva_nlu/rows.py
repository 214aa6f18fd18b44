"""GLUE rows: read from TSV/CSV/JSONL files, lists of dicts or ``datasets`` objects.

A *row* is a dict holding the task's text keys (``sentence``, or ``sentence1`` and ``sentence2``...)
and, when labelled, ``label``: an ``int`` class id, or a ``float`` score for regression (STS-B).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch

import eva_core
import eva_core.paths
from eva_core.errors import EvaError, InvalidConfigError, MissingDataError

from .tasks import GlueTask, get_task

__all__ = [
    "DATA_ENV",
    "DataFormatError",
    "MissingDataError",
    "Row",
    "UnsupportedSourceError",
    "read_rows",
    "row_label",
    "row_text",
    "shared_glue_path",
]


DATA_ENV = eva_core.paths.DATA_ENV
"""The environment variable naming the shared data folder (the one holding ``glue/SST-2/train.tsv``)."""

Row = dict[str, str | int | float]
"""One example: the task's text keys and, when labelled, ``label``."""

_LABEL_COLUMNS = ("label", "labels", "Quality", "is_duplicate", "score", "gold_label")
# Names the original GLUE files use for the ``datasets`` field names.
_TEXT_ALIASES: Mapping[str, tuple[str, ...]] = {
    "sentence1": ("#1 String",),
    "sentence2": ("#2 String",),
    "premise": ("sentence1",),
    "hypothesis": ("sentence2",),
}
_MRPC_COLUMNS = ("label", "id1", "id2", "sentence1", "sentence2")
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")


class DataFormatError(EvaError, ValueError):
    """A data file or row lacks a column the task needs, or holds a value that cannot be read."""


class UnsupportedSourceError(EvaError, TypeError):
    """``read_rows`` was given something that is neither a path nor an iterable of row dicts."""


def shared_glue_path(
    task: str | GlueTask, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The file of a GLUE split in the shared data folder: ``<data_dir>/glue/<SST-2>/<split>.tsv``.

    Args:
        task: the task (its ``folder`` names the sub-folder).
        split: ``train`` or ``dev`` (``validation`` means ``dev``); MNLI's are ``dev_matched``...
        data_dir: the data folder; default ``$EVA_DATA_DIR``, else ``shared/data`` beside the repository.

    Raises:
        MissingDataError: the file does not exist; the message says to set ``EVA_DATA_DIR``.
    """
    glue_task = get_task(task)
    folder = Path(data_dir) if data_dir is not None else eva_core.data_dir(anchor=__file__)
    path = folder / "glue" / glue_task.folder / f"{'dev' if split == 'validation' else split}.tsv"
    if not path.is_file():
        raise MissingDataError(
            f"GLUE {glue_task.name} split={split!r} not found at {path}; set {DATA_ENV} to the folder holding "
            f"glue/{glue_task.folder}/ (now {DATA_ENV}={os.environ.get(DATA_ENV)!r})"
        )
    return path


def read_rows(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    task: str | GlueTask,
    *,
    limit: int | None = None,
    with_labels: bool = True,
) -> list[Row]:
    """The rows of ``source``, keeping the task's text keys and its label.

    Args:
        source: a ``.tsv`` (read with no quoting, as GLUE needs), ``.csv`` or ``.jsonl`` file with a header
            row, or the headerless GLUE MRPC (``label, id1, id2, sentence1, sentence2``) and CoLA
            (``source, label, original_label, sentence``) files; or a list of dicts; or a ``datasets.Dataset``
            (anything iterable of dicts). The label may be called ``label``, ``labels``, ``Quality`` (MRPC),
            ``is_duplicate`` (QQP), ``score`` (STS-B) or ``gold_label`` (MNLI), and may be a class name
            from ``task.label_names``; original GLUE text columns (``#1 String``...) are renamed.
        task: the task or its name.
        limit: read at most this many rows; ``None`` reads all.
        with_labels: require and keep the label; ``False`` reads unlabelled (test) splits.

    Returns:
        N dicts with ``task.text_keys`` (``str``) and, with labels, ``task.label_key``: ``int`` (classes)
        or ``float`` (regression).

    Raises:
        DataFormatError: a column is missing or a value cannot be read (the message names it and where).
        MissingDataError: the file does not exist.
        UnsupportedSourceError: ``source`` is of another kind.
    """
    glue_task = get_task(task)
    if limit is not None and not (isinstance(limit, int) and limit >= 0):
        raise InvalidConfigError(f"limit={limit!r} is invalid; use an integer >= 0, or None to read every row")
    records, origin, known = _records(source)
    columns = None if known is None else _columns(known, glue_task, with_labels, origin)
    rows: list[Row] = []
    for where, record in records:
        if limit is not None and len(rows) >= limit:
            break
        if not isinstance(record, Mapping):
            raise UnsupportedSourceError(f"{where} of {origin} is a {type(record).__name__}; pass dicts of columns")
        if columns is None:
            columns = _columns(list(record), glue_task, with_labels, origin)
        rows.append(_row(record, columns, glue_task, f"{where} of {origin}"))
    return rows


def _records(source: object) -> tuple[Iterable[tuple[str, Any]], str, list[str] | None]:
    """(where, record) pairs of ``source``, a description of it for messages, and its columns when known."""
    if isinstance(source, (str, os.PathLike)):
        return _file_records(Path(source))
    splits = getattr(source, "column_names", None)
    if isinstance(splits, Mapping):
        raise UnsupportedSourceError(
            f"source is a DatasetDict with splits {sorted(splits)}; pass one split, e.g. dataset['validation']"
        )
    if isinstance(source, Mapping) or not isinstance(source, Iterable):
        raise UnsupportedSourceError(
            f"source={type(source).__name__} is not readable; pass a .tsv/.csv/.jsonl path, a list of row dicts "
            "or a datasets.Dataset"
        )
    known = list(splits) if isinstance(splits, (list, tuple)) else None
    return ((f"row {index}", record) for index, record in enumerate(source)), f"the {type(source).__name__}", known


def _file_records(path: Path) -> tuple[Iterable[tuple[str, Any]], str, list[str] | None]:
    if not path.is_file():
        raise MissingDataError(f"source={str(path)!r} is not a file; pass the path of a .tsv, .csv or .jsonl file")
    suffix = path.suffix.lower()
    if suffix not in (".tsv", ".csv", ".jsonl"):
        raise DataFormatError(f"source {path} has suffix {suffix!r}; use a .tsv, .csv or .jsonl file")
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".jsonl":
        return _json_records(text, path), f"file {path}", None
    tabs, handle = suffix == ".tsv", io.StringIO(text, newline="")
    reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if tabs else csv.reader(handle)
    first = next(reader, None)
    if first is None:
        raise DataFormatError(f"file {path} is empty; pass a file with a header row and data rows")
    header, headerless = _header(first)
    lines = itertools.chain([first], reader) if headerless else reader
    return _table_records(lines, reader, header, path, tabs), f"file {path}", list(header)


def _json_records(text: str, path: Path) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"line {number} of file {path} is not JSON: {error.msg}") from None


def _table_records(
    lines: Iterable[list[str]], reader: Any, header: tuple[str, ...], path: Path, tabs: bool
) -> Iterator[tuple[str, dict[str, str]]]:
    for fields in lines:
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataFormatError(
                f"line {reader.line_num} of file {path} has {len(fields)} fields but the header has "
                f"{len(header)} ({', '.join(header)}); check for a stray {'tab' if tabs else 'comma or quote'}"
            )
        yield f"line {reader.line_num}", dict(zip(header, fields, strict=True))


def _header(first: list[str]) -> tuple[tuple[str, ...], bool]:
    """The column names, and whether ``first`` is a data row of a headerless GLUE file (MRPC, CoLA)."""
    if len(first) == 5 and first[0].strip().isdigit():
        return _MRPC_COLUMNS, True
    if len(first) == 4 and first[1].strip() in ("0", "1") and first[2].strip() in ("", "*", "?", "??"):
        return _COLA_COLUMNS, True
    return tuple(name.strip() for name in first), False


def _columns(available: list[str], task: GlueTask, with_labels: bool, origin: str) -> dict[str, str]:
    """Which source column feeds each output key: ``{output key: source column}``."""
    columns: dict[str, str] = {}
    for key in task.text_keys:
        found = next((name for name in (key, *_TEXT_ALIASES.get(key, ())) if name in available), None)
        if found is None:
            raise DataFormatError(
                f"{origin} has no {key!r} column, which task {task.name} needs (columns: {', '.join(available)}); "
                f"rename the text column(s) to {', '.join(task.text_keys)}"
            )
        columns[key] = found
    if with_labels:
        found = next((name for name in _LABEL_COLUMNS if name in available), None)
        if found is None:
            raise DataFormatError(
                f"{origin} has no label column (columns: {', '.join(available)}); name it 'label', "
                "or pass with_labels=False to read unlabelled rows"
            )
        columns[task.label_key] = found
    return columns


def _row(record: Mapping[str, Any], columns: Mapping[str, str], task: GlueTask, where: str) -> Row:
    row: Row = {}
    for key, column in columns.items():
        if column not in record:
            raise DataFormatError(f"{where} has no {column!r} column (keys: {sorted(record)}); give every row one")
        value = record[column]
        row[key] = row_label(value, task, where) if key == task.label_key else row_text(value, column, where)
    return row


def row_text(value: object, column: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {column}={value!r} is a {type(value).__name__}; pass the text as str")
    return value


def row_label(value: object, task: GlueTask, where: str) -> int | float:
    """A class id in [0, num_labels) (from an id or a name in ``task.label_names``) or, for regression, a score."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, str) and value.strip() in task.label_names:
        return task.label_names.index(value.strip())
    number = _number(value)
    if task.is_regression and number is not None and math.isfinite(number):
        return number
    if not task.is_regression and number is not None and number.is_integer() and 0 <= number < task.num_labels:
        return int(number)
    _bad(value, task, where)


def _number(value: object) -> float | None:
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _bad(value: object, task: GlueTask, where: str) -> NoReturn:
    if task.is_regression:
        raise DataFormatError(f"{where}: label={value!r} is not a number; task {task.name} needs a real score")
    names = f" or one of {', '.join(task.label_names)}" if task.label_names else ""
    unlabelled = " (-1 marks an unlabelled test row: pass with_labels=False)" if value in (-1, "-1") else ""
    raise DataFormatError(
        f"{where}: label={value!r} is not a class id of task {task.name}; use 0..{task.num_labels - 1}{names}"
        f"{unlabelled}"
    )
