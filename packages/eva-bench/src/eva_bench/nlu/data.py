"""Labelled GLUE rows for the nlu runs: the shared data folder's files, GLUE-style files, lists of dicts
or ``datasets`` objects.

A *row* is a dict holding the task's text keys (``sentence``, or ``sentence1`` and ``sentence2``...)
and ``label``: an ``int`` class id, or a ``float`` score for regression (STS-B). Files are read by
:func:`eva_nlu.glue.read_table` (``datasets``' csv and json builders); this module finds the label column
and checks its values.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch

from eva_core.errors import EvaError, InvalidConfigError, MissingDataError
from eva_nlu.errors import DataFormatError
from eva_nlu.glue import GlueTask, get_task, read_table, row_text, text_columns

from .. import paths

__all__ = ["LABEL_COLUMNS", "Row", "UnsupportedSourceError", "labelled_rows", "row_label", "shared_glue_path"]

Row = dict[str, str | int | float]
"""One example: the task's text keys and ``label``."""

LABEL_COLUMNS: tuple[str, ...] = ("label", "labels", "Quality", "is_duplicate", "score", "gold_label")
"""Names a label column goes by (GLUE's MRPC ``Quality``, QQP ``is_duplicate``, MNLI ``gold_label``...)."""


class UnsupportedSourceError(EvaError, TypeError):
    """``labelled_rows`` was given something that is neither a path nor an iterable of row dicts."""


def shared_glue_path(
    task: str | GlueTask, split: str = "train", *, data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The file of a GLUE split in the shared data folder: ``<data folder>/glue/<SST-2>/<split>.tsv``.

    Args:
        task: the task (its ``folder`` names the sub-folder).
        split: ``train`` or ``dev`` (``validation`` means ``dev``); MNLI's are ``dev_matched``...
        data_dir: the data folder; default :func:`eva_bench.paths.data_dir` (``$EVA_DATA_DIR``, else
            ``shared/data`` beside the repository).

    Raises:
        MissingDataError: the file does not exist; the message says to set ``EVA_DATA_DIR``.
    """
    glue_task = get_task(task)
    folder = Path(data_dir) if data_dir is not None else paths.data_dir(anchor=__file__)
    path = folder / "glue" / glue_task.folder / f"{'dev' if split == 'validation' else split}.tsv"
    if not path.is_file():
        raise MissingDataError(
            f"GLUE {glue_task.name} split={split!r} not found at {path}; set {paths.DATA_ENV} to the folder holding "
            f"glue/{glue_task.folder}/ (now {paths.DATA_ENV}={os.environ.get(paths.DATA_ENV)!r})"
        )
    return path


def labelled_rows(
    source: str | os.PathLike[str] | Iterable[Mapping[str, Any]], task: str | GlueTask, *, limit: int | None = None
) -> list[Row]:
    """The labelled rows of ``source``, keeping the task's text keys and its label.

    Args:
        source: a ``.tsv``/``.csv``/``.jsonl`` file (:func:`eva_nlu.glue.read_table`: GLUE's own layouts
            included); or a list of dicts; or a ``datasets.Dataset`` (anything iterable of dicts). The
            label may be called any of :data:`LABEL_COLUMNS` and may be a class name from
            ``task.label_names``; original GLUE text columns (``#1 String``...) are renamed.
        task: the task or its name.
        limit: read at most this many rows; ``None`` reads all.

    Returns:
        N dicts with ``task.text_keys`` (``str``) and ``label``: ``int`` (classes) or ``float`` (regression).

    Raises:
        DataFormatError: a column is missing or a value cannot be read (the message names it and where).
        MissingDataError: the file does not exist.
        UnsupportedSourceError: ``source`` is of another kind.
    """
    glue_task = get_task(task)
    if limit is not None and not (isinstance(limit, int) and limit >= 0):
        raise InvalidConfigError(f"limit={limit!r} is invalid; use an integer >= 0, or None to read every row")
    if isinstance(source, (str, os.PathLike)):
        table = read_table(source, glue_task, limit=limit)
        return _rows(table, glue_task, f"file {source}", list(table.column_names), limit)
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
    return _rows(source, glue_task, f"the {type(source).__name__}", known, limit)


def _rows(records: Iterable[Any], task: GlueTask, origin: str, known: list[str] | None, limit: int | None) -> list[Row]:
    """Rows of ``records`` (dicts), columns found from ``known`` (or the first record) once."""
    columns = None if known is None else _columns(known, task, origin)
    rows: list[Row] = []
    for index, record in enumerate(records):
        if limit is not None and len(rows) >= limit:
            break
        if not isinstance(record, Mapping):
            raise UnsupportedSourceError(f"row {index} of {origin} is a {type(record).__name__}; pass dicts of columns")
        if columns is None:
            columns = _columns(list(record), task, origin)
        rows.append(_row(record, columns, task, f"row {index} of {origin}"))
    return rows


def _columns(available: list[str], task: GlueTask, origin: str) -> dict[str, str]:
    """Which source column feeds each output key: ``{output key: source column}``."""
    columns = text_columns(available, task, origin)
    found = next((name for name in LABEL_COLUMNS if name in available), None)
    if found is None:
        raise DataFormatError(
            f"{origin} has no label column (columns: {', '.join(available)}); name it 'label', or read "
            "unlabelled rows with eva_nlu.read_rows"
        )
    columns["label"] = found
    return columns


def _row(record: Mapping[str, Any], columns: Mapping[str, str], task: GlueTask, where: str) -> Row:
    row: Row = {}
    for key, column in columns.items():
        if column not in record:
            raise DataFormatError(f"{where} has no {column!r} column (keys: {sorted(record)}); give every row one")
        value = record[column]
        row[key] = row_label(value, task, where) if key == "label" else row_text(value, column, where)
    return row


def row_label(value: object, task: GlueTask, where: str) -> int | float:
    """A class id in [0, num_labels) (from an id or a name in ``task.label_names``) or, for regression, a score.

    Raises:
        DataFormatError: ``value`` is neither; the message names it and ``where``.
    """
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
    unlabelled = " (-1 marks an unlabelled test row: read it with eva_nlu.read_rows)" if value in (-1, "-1") else ""
    raise DataFormatError(
        f"{where}: label={value!r} is not a class id of task {task.name}; use 0..{task.num_labels - 1}{names}"
        f"{unlabelled}"
    )
