"""How large ``A x`` starts under each initialization: EVA, EVA whitened, and LoRA's random ``A``.

With ``B = 0`` every method starts from the same function, but the first updates of ``B`` move the output
by ``dB (A x)``; under Adam ``dB`` has about the same size for every method, so ``|A x|`` sets the size
of the first steps in function space. EVA's unit rows along the top input directions make ``A x`` as
large as the input's spread along them; whitening brings each component to unit variance.

:func:`main` prints, per layer kind, the mean ``|A x|`` over the answer tokens of real GSM8K batches
(``python benchmarks/adapter_scale.py --model gemma3-270m``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import eva_core
from eva_llm import load_causal_lm, qa_loader
from eva_llm.batches import IGNORE_INDEX
from eva_llm.cli import MODEL_ALIASES

from .data import read_gsm8k

__all__ = ["combined_table", "main", "mean_scales", "table"]

MODELS: tuple[str, ...] = ("gemma3-270m", "smollm2")


def mean_scales(
    model: nn.Module, state: eva_core.EvaState, probe: Mapping[str, torch.Tensor], rank: int
) -> dict[str, dict[str, float]]:
    """Per layer kind (``q_proj``, ``c_fc``...), the mean over blocks of the mean ``|A x|`` over the answer
    tokens of ``probe`` for ``A`` from ``eva``, ``eva_whiten`` and ``lora`` (and ``|x|`` itself)."""
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_pre_hook(lambda _m, a, name=name: inputs.__setitem__(name, a[0].detach()))
        for name in state.layers
    ]
    with torch.no_grad():
        model(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"])
    for handle in handles:
        handle.remove()
    answer = (probe["labels"] != IGNORE_INDEX).reshape(-1)  # (N,)
    norms: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for name in state.layers:
        rows = inputs[name].reshape(-1, inputs[name].shape[-1])[answer]  # (N, d_in)
        bound = 1 / math.sqrt(rows.shape[1])  # peft's Kaiming-uniform(a=sqrt(5)) bound for lora_A
        starts = {
            "eva": state.components(name)[:rank],
            "eva_whiten": state.components(name, whiten=True)[:rank],
            "lora": torch.empty(rank, rows.shape[1]).uniform_(-bound, bound),
        }
        kind = name.rsplit(".", 1)[-1]
        for method, weight_a in starts.items():  # (r, d_in)
            norms[kind][method].append(float((rows @ weight_a.T).norm(dim=1).mean()))
        norms[kind]["|x|"].append(float(rows.norm(dim=1).mean()))
    return {kind: {m: sum(v) / len(v) for m, v in by_method.items()} for kind, by_method in norms.items()}


def table(scales: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown: one row per layer kind."""
    lines = ["| layer | mean norm of x | lora | eva | eva_whiten | eva / lora |", "|---|---|---|---|---|---|"]
    for kind, mean in scales.items():
        lines.append(
            f"| {kind} | {mean['|x|']:.1f} | {mean['lora']:.2f} | {mean['eva']:.2f} | {mean['eva_whiten']:.2f} "
            f"| {mean['eva'] / mean['lora']:.1f} |"
        )
    return "\n".join(lines)


NAMES: dict[str, str] = {"gemma3-270m": "Gemma-3-270M", "smollm2": "SmolLM2-135M"}


def combined_table(record: Mapping[str, Any]) -> str:
    """Markdown of an ``--out`` record: one row per (model, layer kind), the models in the record's order."""
    lines = [
        "| model | layer | mean ‖x‖ | ‖A x‖ lora | ‖A x‖ eva | ‖A x‖ eva_whiten | eva / lora |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, run in record["models"].items():
        for kind, mean in run["scales"].items():
            lines.append(
                f"| {NAMES.get(model, model)} | {kind} | {mean['|x|']:.1f} | {mean['lora']:.2f} | {mean['eva']:.2f} "
                f"| {mean['eva_whiten']:.2f} | {mean['eva'] / mean['lora']:.1f} |"
            )
    return "\n".join(lines)


def _save(out: Path, model: str, run: dict[str, Any]) -> None:
    """Add (or replace) ``model``'s run in the record ``out`` (JSON, written atomically) and write its page
    ``out.md`` (:func:`combined_table`)."""
    record = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    record = {"models": {**record.get("models", {}), model: run}}
    for suffix, text in ((".json", json.dumps(record, indent=1) + "\n"), (".md", combined_table(record) + "\n")):
        temporary = out.with_suffix(suffix + ".tmp")
        temporary.write_text(text)
        temporary.replace(out.with_suffix(suffix))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="gemma3-270m")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="batches of 4 problems EVA measures")
    parser.add_argument("--out", type=Path, help="add this model's figures to the record <out>.json (and <out>.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    model, tokenizer = load_causal_lm(MODEL_ALIASES[args.model]())
    batches = list(qa_loader(tokenizer, read_gsm8k(count=4 * args.batches), 4, max_length=192))
    state = eva_core.fit(model, batches, domain="llm", rank=args.rank, rho=1.0, tau=0.0, progress=False)
    scales = mean_scales(model, state, batches[-1], args.rank)
    print(f"{args.model}: mean norm of A x over answer tokens, r = {args.rank}, averaged over the blocks\n")
    print(table(scales))
    if args.out:
        command = "python benchmarks/adapter_scale.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        meta = {"command": command, "torch": torch.__version__, "date": datetime.date.today().isoformat()}
        _save(args.out, args.model, {"meta": {**meta, "rank": args.rank, "batches": args.batches}, "scales": scales})
