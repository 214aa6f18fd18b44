"""``eva fit`` for causal LMs: the ``smollm2`` / ``gemma3-270m`` aliases or a local model folder, and
GSM8K-style question/answer files.

``eva fit smollm2 gsm8k/train.jsonl --domain llm`` loads the (cached, converted) checkpoint, reads the
problems and batches them with the prompt masked, so EVA measures answer tokens only. Options:
``--option template=plain`` (or ``chat``, ``auto``), ``--option max_length=512``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from eva_core import InvalidConfigError, hookimpl
from eva_core.hookspecs import LoadedModel

from .api import lora_config_for_model
from .batches import qa_loader
from .checkpoints import gemma3_270m_checkpoint, load_causal_lm, smollm2_checkpoint
from .data import read_gsm8k

__all__ = ["MODEL_ALIASES", "eva_cli_batches", "eva_cli_load_model"]

MODEL_ALIASES: Mapping[str, Callable[[], Path]] = {
    "smollm2": smollm2_checkpoint,
    "smollm2-135m": smollm2_checkpoint,
    "gemma3-270m": gemma3_270m_checkpoint,
}
"""Short names of checkpoints shipped in pip packages (converted once, then cached)."""


@hookimpl
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """An alias of :data:`MODEL_ALIASES` or a local folder whose ``config.json`` names a
    ``...ForCausalLM`` architecture; None otherwise."""
    checkpoint = MODEL_ALIASES.get(model.lower())
    if checkpoint is not None:
        path = checkpoint()
    elif _is_causal_lm_folder(Path(model).expanduser()):
        path = Path(model).expanduser()
    else:
        return None
    causal_lm, tokenizer = load_causal_lm(path)
    return LoadedModel(model=causal_lm, processor=tokenizer, lora_config=lora_config_for_model(causal_lm, rank=16))


@hookimpl
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """GSM8K-style problems (a ``.jsonl`` of ``question`` / ``answer``), batched with the prompt masked."""
    if Path(data).suffix.lower() != ".jsonl" or loaded.processor is None:
        return None
    problems = read_gsm8k(data, count=rows)
    max_length = options.get("max_length", "512")
    if not max_length.isdigit():
        raise InvalidConfigError(f"--option max_length={max_length!r} is invalid; use an integer, e.g. 512")
    template = options.get("template", "auto")
    return qa_loader(loaded.processor, problems, batch_size, template=template, max_length=int(max_length))


def _is_causal_lm_folder(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(name).endswith("ForCausalLM") or str(name).endswith("LMHeadModel") for name in architectures)
