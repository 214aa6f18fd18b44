"""``eva-lora fit`` for causal LMs: the ``smollm2`` / ``gemma3-270m`` aliases or a local model folder, and
question/answer JSON-lines files.

``eva-lora fit smollm2 gsm8k/train.jsonl --domain llm`` loads the (cached, converted) checkpoint, reads the
problems and batches them with the prompt masked, so EVA measures answer tokens only. Options:
``--option template=plain`` (or ``chat``, ``auto``), ``--option max_length=512``. The plugin's
``eva_cli_*`` hooks call :func:`load_model` and :func:`batches`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eva_core import LoadedModel
from eva_core.cli.domains import DomainOptions
from eva_core.errors import InvalidConfigError, MissingDataError, UnreadableDataError

from .batches import QAProblem, qa_loader
from .checkpoints import gemma3_270m_checkpoint, load_causal_lm, smollm2_checkpoint

__all__ = ["MODEL_ALIASES", "batches", "example", "load_model", "read_problems"]

MODEL_ALIASES: Mapping[str, Callable[[], Path]] = {
    "smollm2": smollm2_checkpoint,
    "smollm2-135m": smollm2_checkpoint,
    "gemma3-270m": gemma3_270m_checkpoint,
}
"""Short names of checkpoints shipped in pip packages (converted once, then cached)."""

_FIELDS = ("question", "answer")
_TEMPLATES = ("auto", "chat", "plain")
_SHAPE = 'each line must be a JSON object like {"question": "...", "answer": "... #### 42"}.'


def load_model(model: str) -> LoadedModel | None:
    """The causal LM and tokenizer of an alias of :data:`MODEL_ALIASES` or of a local folder whose
    ``config.json`` names a ``...ForCausalLM`` / ``...LMHeadModel`` architecture; None otherwise. The
    adapter's ``LoraConfig`` fields come from the plugin (``eva_lora_fields``), as in Python."""
    checkpoint = MODEL_ALIASES.get(model.lower())
    if checkpoint is not None:
        path = checkpoint()
    elif _is_causal_lm_folder(Path(model).expanduser()):
        path = Path(model).expanduser()
    else:
        return None
    causal_lm, tokenizer = load_causal_lm(path)
    return LoadedModel(model=causal_lm, processor=tokenizer)


def example(model: str, batch_size: int, length: int) -> tuple[nn.Module, dict[str, torch.Tensor]] | None:
    """For ``eva-lora plan``: the causal LM of an alias, a local folder or its ``config.json`` built from the
    configuration alone on the meta device (no weights read, no memory taken), and a batch of ``batch_size``
    sequences of ``length`` tokens (``input_ids`` alone: a model reads its padding mask's values, which the meta
    device does not have); None when ``model`` is none of these."""
    from transformers import AutoConfig, AutoModelForCausalLM

    checkpoint = MODEL_ALIASES.get(model.lower())
    path = checkpoint() if checkpoint is not None else Path(model).expanduser()
    folder = path.parent if path.name.endswith(".json") else path
    if not _is_causal_lm_folder(folder, path.name if path.is_file() else "config.json"):
        return None
    config = AutoConfig.from_pretrained(str(path))
    with torch.device("meta"):
        causal_lm = AutoModelForCausalLM.from_config(config)
    return causal_lm.eval(), {"input_ids": torch.zeros(batch_size, length, dtype=torch.long)}


def batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """Question/answer problems of a ``.jsonl`` file, batched with the prompt masked (:func:`eva_llm.qa_loader`);
    None for another kind of file or a model without a tokenizer."""
    if Path(data).suffix.lower() != ".jsonl" or loaded.processor is None:
        return None
    max_length = DomainOptions.integer(options, "max_length", 512, minimum=2)  # a prompt token and an answer token
    template = options.get("template", "auto")
    if template not in _TEMPLATES:
        raise InvalidConfigError(f"--option template={template!r} is invalid; use one of {', '.join(_TEMPLATES)}")
    problems = read_problems(data, count=rows)  # after the options: a typo fails before the file is read
    return qa_loader(loaded.processor, problems, batch_size, template=template, max_length=max_length)


def read_problems(path: str | os.PathLike[str], *, count: int | None = None) -> list[QAProblem]:
    """The problems of a JSON-lines file of ``{"question": "...", "answer": "..."}`` objects (GSM8K's
    format), read with the ``datasets`` JSON builder; the first ``count`` of them, or all when None.

    Raises:
        MissingDataError: ``path`` is not a file.
        UnreadableDataError: a line is not JSON, or a row lacks a string ``question`` or ``answer``.
    """
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    file = Path(path)
    if not file.is_file():
        raise MissingDataError(f"read_problems(path={str(file)!r}): no such file; pass a JSON-lines file.")
    try:
        table = load_dataset("json", data_files=str(file), split="train")
    except DatasetGenerationError as error:
        raise UnreadableDataError(f"{file} is not JSON lines ({error.__cause__ or error}); {_SHAPE}") from error
    if count is not None:
        table = table.select(range(min(count, len(table))))
    if any(name not in table.column_names for name in _FIELDS):
        raise UnreadableDataError(f"{file} has the fields {table.column_names}; {_SHAPE}")
    problems = []
    for row, (question, answer) in enumerate(zip(table["question"], table["answer"], strict=True), start=1):
        if not isinstance(question, str) or not isinstance(answer, str):
            raise UnreadableDataError(f"{file}: row {row} has no string 'question' and 'answer'; {_SHAPE}")
        problems.append(QAProblem(question=question, answer=answer))
    return problems


def _is_causal_lm_folder(path: Path, name: str = "config.json") -> bool:
    config = path / name
    if not config.is_file():
        return False
    try:
        fields = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    architectures = fields.get("architectures") or []
    if not architectures:  # a config saved from its class alone (LlamaConfig(...).save_pretrained) names no model
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return fields.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return any(str(name).endswith("ForCausalLM") or str(name).endswith("LMHeadModel") for name in architectures)
