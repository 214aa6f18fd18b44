"""How close the streaming sketch (:mod:`eva_core.svd.sketch`) comes to the exact SVD of all rows, beside
peft's incremental PCA on the same rows, and what one batch costs each of them.

For every distinct input of the selected layers, one pass over the batches feeds the same masked rows
(N, d_in) to: an independent float64 scatter (the reference, solved with ``torch.linalg.eigh``), our
sketch (width ``sketch_width(k)``, as a fit builds it), eva-core's exact Gram update (timed only) and
peft's ``IncrementalPCA`` with the settings peft's EVA uses (``n_components=k``, ``lowrank=True``,
``lowrank_seed=42``). Reported per model: the subspace overlap ``1 - subspace_error`` of the top k
(mean, minimum, minimum where the k-th eigengap ``(lambda_k - lambda_{k+1}) / lambda_k`` is >= 2 %), the
mean relative error of the top-k variances, and the CPU seconds per batch (1 thread).

Real rows: all-MiniLM-L6-v2 on SST-2, SmolLM2-135M and Gemma-3-270M on GSM8K (every third block).
Synthetic rows at d_in = 4096 and 11008, 4096 rows a batch: 64 dense directions with power-law variances
``i^-1`` over an axis-aligned power-law tail ``10^-2 j^-0.5``, around a mean of size 3.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eva_bench.engine import data
from eva_core.fitting.stopping import subspace_error
from eva_core.svd import GramStatistics, SketchStatistics
from eva_core.svd.sketch import sketch_width

__all__ = ["main", "measure", "report"]

K = 16  # round(rho * rank) for the benchmarks' rank 8, rho 2
GAP = 0.02
_LLM_TARGETS = r"model\.layers\.(\d+)\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


class _Layer:
    """One input's four consumers and the CPU seconds each spent."""

    def __init__(self, dim: int, k: int) -> None:
        from peft.utils.incremental_pca import IncrementalPCA

        self.scatter = torch.zeros(dim, dim, dtype=torch.float64)  # (d_in, d_in) sum of x x^T
        self.total = torch.zeros(dim, dtype=torch.float64)  # (d_in,) sum of x
        self.rows = 0
        self.ours = SketchStatistics(dim, sketch_width(k), "cpu")
        self.gram = GramStatistics(dim, "cpu")
        self.peft = IncrementalPCA(n_components=k, copy=True, lowrank=True, lowrank_seed=42)
        self.seconds = {"ours": 0.0, "gram": 0.0, "peft": 0.0}
        self.batches = 0

    def add(self, rows: torch.Tensor) -> None:
        exact = rows.double()
        self.scatter += exact.T @ exact
        self.total += exact.sum(dim=0)
        self.rows += rows.shape[0]
        self.batches += 1
        for key, update in (("ours", self.ours.update), ("gram", self.gram.update), ("peft", self._peft)):
            started = time.process_time()
            update(rows)
            self.seconds[key] += time.process_time() - started

    def _peft(self, rows: torch.Tensor) -> None:
        if rows.shape[0] >= self.peft.n_components:  # peft's EVA skips such batches too
            self.peft.partial_fit(rows.float())

    def score(self, k: int) -> dict[str, Any]:
        centered = self.scatter - torch.outer(self.total, self.total) / self.rows
        values, vectors = torch.linalg.eigh(centered)
        values, vectors = values.flip(0), vectors.flip(1)
        reference = vectors[:, :k].T.float()  # (k, d_in)
        ours = self.ours.top(k)
        peft_values = self.peft.explained_variance_.double() * (self.rows - 1)
        return {
            "dim": int(self.scatter.shape[0]),
            "rows": self.rows,
            "gap": float((values[k - 1] - values[k]) / values[k - 1]),
            "overlap": {
                "ours": 1 - subspace_error(ours.components, reference),
                "peft": 1 - subspace_error(self.peft.components_.float(), reference),
            },
            "variance_error": {
                "ours": float(((ours.singular_values.double().pow(2) - values[:k]).abs() / values[:k]).mean()),
                "peft": float(((peft_values[:k] - values[:k]).abs() / values[:k]).mean()),
            },
            "cpu_per_batch": {key: seconds / self.batches for key, seconds in self.seconds.items()},
        }


def _models() -> dict[str, Callable[[int], tuple[nn.Module, list[dict[str, torch.Tensor]], str]]]:
    def minilm(count: int) -> tuple[nn.Module, list[dict[str, torch.Tensor]], str]:
        return data.load_model("minilm"), data.batches("minilm", count), data.MINILM.targets

    def causal(key: str) -> Callable[[int], tuple[nn.Module, list[dict[str, torch.Tensor]], str]]:
        def load(count: int) -> tuple[nn.Module, list[dict[str, torch.Tensor]], str]:
            from eva_llm.checkpoints import gemma3_270m_checkpoint, load_causal_lm, smollm2_checkpoint

            folder = smollm2_checkpoint() if key == "smollm2" else gemma3_270m_checkpoint()
            model, tokenizer = load_causal_lm(folder)
            texts = data.gsm8k_texts(count * 8)
            chunks = [texts[i : i + 8] for i in range(0, len(texts), 8)]
            encoded = [
                tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt") for chunk in chunks
            ]
            batches = [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"]} for e in encoded]
            return model, batches, _LLM_TARGETS

        return load

    return {"minilm": minilm, "smollm2": causal("smollm2"), "gemma3-270m": causal("gemma3-270m")}


def _every_third_block(name: str) -> bool:
    match = re.fullmatch(_LLM_TARGETS, name)
    return match is None or int(match.group(1)) % 3 == 0


def measure(key: str, batch_count: int, k: int = K) -> dict[str, Any]:
    """The record of model ``key`` (``minilm``, ``smollm2``, ``gemma3-270m``) over ``batch_count`` batches."""
    model, batches, targets = _models()[key](batch_count)
    layers: dict[str, _Layer] = {}
    held: dict[int, tuple[torch.Tensor, str]] = {}  # this forward's inputs, so a shared one is measured once
    mask: list[torch.Tensor] = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            layer_input = args[0]
            if id(layer_input) in held and held[id(layer_input)][0] is layer_input:
                return
            held[id(layer_input)] = (layer_input, name)
            flat = layer_input.reshape(-1, layer_input.shape[-1])  # (B*T, d_in)
            rows = flat[mask[0]]  # (N, d_in)
            layers.setdefault(name, _Layer(flat.shape[1], k)).add(rows)

        return hook

    chosen = [n for n, m in model.named_modules() if re.fullmatch(targets, n) and _every_third_block(n)]
    handles = [model.get_submodule(name).register_forward_pre_hook(hook_for(name)) for name in chosen]
    started = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            held.clear()
            mask[:] = [batch["attention_mask"].reshape(-1).bool()]
            model(**batch)
    for handle in handles:
        handle.remove()
    scored = {name: layer.score(k) for name, layer in layers.items()}
    return {"model": key, "k": k, "width": sketch_width(k), "batches": batch_count, "layers": scored,
            "seconds": time.perf_counter() - started}  # fmt: skip


def _synthetic_batches(dim: int, count: int, rows: int, seed: int = 0) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    dense = torch.linalg.qr(torch.randn(dim, 64, generator=generator, dtype=torch.float64))[0].float()  # (d_in, 64)
    strength = torch.arange(1, 65, dtype=torch.float32).pow(-0.5)  # (64,) sqrt of i^-1
    tail = 0.1 * torch.arange(1, dim + 1, dtype=torch.float32).pow(-0.25)  # (d_in,) sqrt of 1e-2 j^-0.5
    mean = 3.0 * torch.randn(dim, generator=generator)
    for _ in range(count):
        low = torch.randn(rows, 64, generator=generator) * strength @ dense.T  # (N, d_in)
        yield low + torch.randn(rows, dim, generator=generator) * tail + mean


def measure_synthetic(dim: int, batch_count: int, rows: int = 4096, k: int = K) -> dict[str, Any]:
    """The record of synthetic rows ``dim`` wide (see the module docstring)."""
    layer = _Layer(dim, k)
    started = time.perf_counter()
    for batch in _synthetic_batches(dim, batch_count, rows):
        layer.add(batch)
    return {"model": f"synthetic d={dim}", "k": k, "width": sketch_width(k), "batches": batch_count,
            "layers": {f"d={dim}": layer.score(k)}, "seconds": time.perf_counter() - started}  # fmt: skip


def _row(record: dict[str, Any]) -> str:
    layers = list(record["layers"].values())
    gapped = [layer for layer in layers if layer["gap"] >= GAP]

    def stat(what: str, method: str, pick: Callable[[list[float]], float], among: list[dict] = layers) -> str:
        values = [layer[what][method] for layer in among]
        return f"{pick(values):.4f}" if values else "-"

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    wins = sum(layer["overlap"]["ours"] >= layer["overlap"]["peft"] for layer in layers)
    cpu = {method: mean([layer["cpu_per_batch"][method] for layer in layers]) for method in ("ours", "gram", "peft")}
    return (
        f"| {record['model']} | {len(layers)} ({len(gapped)}) | {record['batches']} | {record['width']} "
        f"| {stat('overlap', 'ours', mean)} / {stat('overlap', 'peft', mean)} "
        f"| {stat('overlap', 'ours', min)} / {stat('overlap', 'peft', min)} "
        f"| {stat('overlap', 'ours', min, gapped)} / {stat('overlap', 'peft', min, gapped)} "
        f"| {wins}/{len(layers)} "
        f"| {stat('variance_error', 'ours', mean)} / {stat('variance_error', 'peft', mean)} "
        f"| {cpu['ours'] / cpu['gram']:.2f} / {cpu['peft'] / cpu['gram']:.2f} |"
    )


def report(records: list[dict[str, Any]]) -> str:
    """The markdown table of ``records`` (what ``--out`` writes beside the JSON)."""
    head = (
        f"| rows | inputs (gap ≥ {GAP:.0%}) | batches | sketch l | overlap mean, ours / peft | min | min where gap ≥ "
        f"{GAP:.0%} | ours ≥ peft | variance rel. error | CPU per batch vs exact Gram, ours / peft |"
    )
    return "\n".join([head, "|" + "---|" * 10, *(_row(record) for record in records)])


def main() -> None:
    """Measure the models asked for; print the table and, with ``--out``, write it and the records."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MiniLM, 3 batches, and d=512 synthetic rows")
    parser.add_argument("--out", type=Path, help="write the table (.md) and the records (.json) here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        jobs = [lambda: measure("minilm", 3), lambda: measure_synthetic(512, 3, rows=512)]
    else:
        jobs = [lambda: measure("minilm", 24), lambda: measure("smollm2", 12), lambda: measure("gemma3-270m", 12)]
        jobs += [lambda: measure_synthetic(4096, 8), lambda: measure_synthetic(11008, 4)]
    records: list[dict[str, Any]] = []
    for job in jobs:  # the table so far is written after each model, so an interruption keeps it
        records.append(job())
        text = report(records)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".md").write_text(text + "\n")
            args.out.with_suffix(".json").write_text(json.dumps(records, indent=1) + "\n")
    print(text)
