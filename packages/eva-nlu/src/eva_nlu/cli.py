"""``eva fit`` for encoders on GLUE: the MiniLM alias or a local encoder folder, and GLUE rows.

``eva fit minilm glue/SST-2/train.tsv --domain nlu`` loads the model with a new task head sized for the
task, reads the file's rows (``.tsv``, ``.csv``, ``.jsonl``; labels are not needed) and tokenizes them
into padded batches. The task comes from ``--option task=sst2``, else from the data's folder name
(``SST-2``); ``--option max_length=128`` truncates longer examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from eva_core import InvalidConfigError, hookimpl
from eva_core.hookspecs import LoadedModel

from .batching import batches
from .rows import read_rows
from .tasks import TASKS, GlueTask, get_task

__all__ = ["eva_cli_batches", "eva_cli_load_model"]

_SUFFIXES = (".tsv", ".csv", ".jsonl")


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """An alias of :data:`~eva_nlu.recipe.MODEL_ALIASES` or a local folder holding an encoder
    (``config.json`` with a ``model_type`` of :data:`~eva_nlu.plugin.ENCODER_TYPES`); None otherwise."""
    from .api import default_lora_config  # imported here: api and recipe import .plugin, which imports this module
    from .recipe import MODEL_ALIASES, _model_path, load_model

    if model.lower().removeprefix("sentence-transformers/") in MODEL_ALIASES:
        path = _model_path(model)
    elif _is_encoder_folder(Path(model).expanduser()):
        path = str(Path(model).expanduser())
    else:
        return None
    task = _task(data, options)
    encoder, tokenizer = load_model(path, task)
    return LoadedModel(model=encoder.eval(), processor=tokenizer, lora_config=default_lora_config(encoder, rank=8))


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """GLUE rows from a ``.tsv``/``.csv``/``.jsonl`` file, tokenized into padded batches (no labels)."""
    if Path(data).suffix.lower() not in _SUFFIXES or loaded.processor is None:
        return None
    task = _task(data, options)
    max_length = _int_option(options, "max_length", 128)
    glue_rows = read_rows(data, task, limit=rows, with_labels=False)
    return batches(glue_rows, loaded.processor, task, batch_size, max_length=max_length, with_labels=False)


def _is_encoder_folder(path: Path) -> bool:
    from .plugin import ENCODER_TYPES

    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError):
        return False
    return model_type in ENCODER_TYPES


def _task(data: str, options: Mapping[str, str]) -> GlueTask:
    """``--option task=...``, else the task whose GLUE folder name (``SST-2``) holds ``data``."""
    if "task" in options:
        return get_task(options["task"])
    for folder in Path(data).resolve().parents:
        for task in TASKS.values():
            if folder.name.lower() == task.folder.lower():
                return task
    raise InvalidConfigError(
        f"DATA={data!r} is in no GLUE task folder (SST-2, MRPC, ...); name the task with --option task=sst2 "
        f"(one of {', '.join(sorted(TASKS))})."
    )


def _int_option(options: Mapping[str, str], key: str, default: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidConfigError(f"--option {key}={value!r} is invalid; use an integer, e.g. {key}={default}") from None
