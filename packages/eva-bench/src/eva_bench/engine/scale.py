"""The scale benchmark (``benchmarks/bench_scale.py``; ``benchmarks/bench_cuda.py`` on an accelerator): what
EVA costs at LLM shapes, and how close the sketch comes to the exact statistics on real models.

1. One Llama-2-7B-shaped decoder block (:mod:`eva_bench.engine.scale_subjects`: random weights, N(0, 1)
   hidden states, so cost only), a few batches of 8 x 512 tokens, every method in its own subprocess with
   one torch thread (:mod:`eva_bench.engine.scale_runs`): ``forward``, ``exact``, ``sketch``, ``auto``
   (when this eva-core has ``EvaConfig.statistics``) and ``peft``.
2. The whole SmolLM2-135M and Gemma-3-270M on real GSM8K problems: ``forward``, ``exact`` and ``sketch`` over
   the same batches, and per measured input the overlap ``1 - subspace_error`` of the sketch's top
   components with the exact ones (:func:`overlaps`).

"Peak extra" is the method's peak memory minus that of the forward-only run of the same subject (each in a
fresh process: peak resident set on CPU, ``torch.cuda.max_memory_allocated`` on CUDA), so it is what the
method adds to a forward pass: statistics, their transients, peft's or our bookkeeping.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from eva_core.fitting.stopping import subspace_error

from . import plan_table
from . import scale_subjects as subjects
from .scale_runs import RANK, RHO, run_method, statistics_fields

__all__ = ["bench_block", "bench_model", "execute", "main", "overlaps", "page", "report"]

Run = Callable[[dict[str, Any]], dict[str, Any]]
GAP = 0.02  # the r-th relative eigengap above which the issue asks for overlap >= 0.99


def _load(job: dict[str, Any]) -> tuple[torch.nn.Module, list[Any], str | None]:
    """The job's model, its batches (on the job's device) and the targets peft needs as a regex."""
    dtype, device = getattr(torch, job["dtype"]), job["device"]
    if job["subject"] == "block":
        model = subjects.build_block(job["shape"], dtype, device)
        batches: list[Any] = subjects.block_batches(
            job["shape"], job["batches"], job["size"], job["tokens"], dtype, device
        )
        return model, batches, r"layer\..*_proj"
    from .suite import default_targets

    model = subjects.load_lm(job["subject"], dtype, device)
    batches = subjects.lm_batches(job["subject"], job["batches"], job["size"], job["tokens"])
    batches = [{key: value.to(device) for key, value in batch.items()} for batch in batches]
    return model, batches, job.get("targets") or default_targets(model)


def execute(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job (a method on a subject) in this process."""
    model, batches, targets = _load(job)
    return run_method(job["method"], model, batches, targets, job["device"], job.get("check_every", 1))


def _child(job_file: str, result_file: str) -> None:
    import peft.tuners.lora.eva  # noqa: F401 - imported before measuring, in every method's process
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    torch.save(execute(torch.load(job_file, weights_only=False)), result_file)


def spawn(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run ``job`` in a fresh subprocess of this module and return its result."""
    stem = str(folder / f"{job['subject']}-{job['method']}")
    torch.save(job, f"{stem}.job.pt")
    command = [sys.executable, "-m", "eva_bench.engine.scale", "--child", f"{stem}.job.pt", f"{stem}.result.pt"]
    subprocess.run(command, check=True)
    return torch.load(f"{stem}.result.pt", weights_only=False)


def _rows(name: str, runs: dict[str, dict[str, Any]], tokens: int) -> list[dict[str, Any]]:
    """One table row per method: its cost against the forward-only run of the same batches."""
    forward = runs["forward"]
    rows = []
    for method, run in runs.items():
        n = len(forward["wall_per_batch"])
        row = {
            "subject": name, "method": method, "batches": n, "tokens": tokens, "wall": run["wall"], "cpu": run["cpu"],
            "peak_extra": run["peak"] - forward["peak"], "statistic_bytes": run.get("statistic_bytes", 0),
            "kinds": run.get("kinds", {}), "solve": run.get("solve", 0.0),
        }  # fmt: skip
        if method == "forward":
            row.update(wall=sum(forward["wall_per_batch"]), cpu=sum(forward["cpu_per_batch"]), peak_extra=0)
        row["x_forward"] = row["wall"] / sum(forward["wall_per_batch"])
        row["x_forward_cpu"] = row["cpu"] / sum(forward["cpu_per_batch"])
        rows.append(row)
    return rows


def bench_block(shape: str, methods: Sequence[str], settings: dict[str, Any], run: Run) -> dict[str, Any]:
    """Every method of ``methods`` on the decoder block of ``shape`` over the same batches."""
    job = {"subject": "block", "shape": shape, **settings}
    runs = {method: run({**job, "method": method}) for method in ("forward", *methods)}
    name = f"Llama-2-7B block ({shape})" if shape == "7b" else f"decoder block ({shape})"
    return {"subject": name, "settings": job, "rows": _rows(name, runs, settings["size"] * settings["tokens"])}


def bench_model(key: str, methods: Sequence[str], settings: dict[str, Any], run: Run) -> dict[str, Any]:
    """Forward, the exact and the sketch fit of model ``key`` over the same batches, and the sketch's overlap."""
    job = {"subject": key, **settings, "config": subjects.model_config(key)}
    runs = {method: run({**job, "method": method}) for method in ("forward", *methods)}
    first = next(iter(runs["exact"]["layers"].values()))
    tokens = round(first["rows"] / settings["batches"])  # real (unpadded) tokens per batch
    record = {"subject": subjects.MODELS[key], "settings": job, "rows": _rows(subjects.MODELS[key], runs, tokens)}
    if "sketch" in runs and "exact" in runs:
        record["overlap"] = overlaps(runs["exact"]["layers"], runs["sketch"]["layers"], RANK)
    return record


def overlaps(exact: dict[str, Any], sketch: dict[str, Any], rank: int) -> dict[str, Any]:
    """Per measured input, ``1 - subspace_error`` between the sketch's and the exact top-``rank`` and
    top-``2 rank`` components, and the exact spectrum's relative ``rank``-th eigengap
    ``(lambda_r - lambda_{r+1}) / lambda_r``; with the means and minima over inputs (all, and those whose gap
    is at least 2 %)."""
    layers = {}
    for source, truth in exact.items():
        mine, values = sketch[source]["components"], truth["variance"]
        wide = min(2 * rank, len(mine), len(truth["components"]))
        gap = float((values[rank - 1] - values[rank]) / values[rank - 1]) if len(values) > rank else math.nan
        layers[source] = {
            "at_r": 1 - subspace_error(mine[:rank], truth["components"][:rank]),
            "at_2r": 1 - subspace_error(mine[:wide], truth["components"][:wide]),
            "gap": gap,
        }
    gapped = [layer["at_r"] for layer in layers.values() if layer["gap"] >= GAP]

    def stats(values: list[float]) -> list[float]:
        return [sum(values) / len(values), min(values)] if values else [math.nan, math.nan]

    return {
        "inputs": len(layers), "at_r": stats([x["at_r"] for x in layers.values()]),
        "at_2r": stats([x["at_2r"] for x in layers.values()]), "gapped": len(gapped), "gapped_at_r": stats(gapped),
        "layers": layers,
    }  # fmt: skip


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(records: list[dict[str, Any]], memory: str = "peak RSS") -> str:
    """The cost table (every subject) and the overlap table (the real models)."""
    head = ("subject", "method", "batches x tokens", "wall s", "CPU s", "wall / forward", "CPU / forward",
            "of which solves s", f"peak extra MiB ({memory})", "statistics MiB", "statistics")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for record in records:
        for r in record["rows"]:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(r["kinds"].items())) or "-"
            lines.append(
                f"| {r['subject']} | {r['method']} | {r['batches']} x {r['tokens']} | {r['wall']:.1f} | {r['cpu']:.1f} "
                f"| {r['x_forward']:.2f} | {r['x_forward_cpu']:.2f} | {r['solve']:.1f} | {_mib(r['peak_extra'])} "
                f"| {_mib(r['statistic_bytes'])} | {kinds} |"
            )
    out = ["\n".join(lines)]
    modelled = [record for record in records if "overlap" in record]
    if modelled:
        head = ("model", "inputs", f"overlap top-{RANK} mean / min", f"overlap top-{2 * RANK} mean / min",
                f"inputs with {RANK}-th gap >= {GAP:.0%}", "their overlap top-r mean / min")  # fmt: skip
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for record in modelled:
            o = record["overlap"]
            rows.append(
                f"| {record['subject']} | {o['inputs']} | {o['at_r'][0]:.4f} / {o['at_r'][1]:.4f} | "
                f"{o['at_2r'][0]:.4f} / {o['at_2r'][1]:.4f} | {o['gapped']} | "
                f"{o['gapped_at_r'][0]:.4f} / {o['gapped_at_r'][1]:.4f} |"
            )
        out.append("\n".join(rows))
    return "\n\n".join(out)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny shapes: a smoke test",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="float32", help="the model's dtype (bfloat16 on an accelerator)")
    parser.add_argument("--check-every", type=int, default=1, help="EvaConfig.check_every of our fits")
    parser.add_argument("--block-batches", type=int, default=2, help="batches of the 7B block")
    parser.add_argument(
        "--block-check-every", type=int, help="check_every of the block's fits (default: its batch count, one check)"
    )
    parser.add_argument("--tokens", type=int, default=512, help="tokens per sequence of the block's batches")
    parser.add_argument("--subjects", default="block,smollm2,gemma3", help="comma-separated: block, smollm2, gemma3")
    parser.add_argument("--model-batches", type=int, default=6, help="batches of 8 GSM8K problems per model")
    parser.add_argument("--methods", default="exact,sketch,auto,peft", help="of the block (auto: if available)")
    parser.add_argument("--plan", action="store_true", help="only the planner's table (Llama-2-7B/3-8B/2-70B, peft)")
    parser.add_argument("--records", type=Path, help="render the records of an earlier --out JSON (measure nothing)")
    parser.add_argument("--out", type=Path, help="also write the tables (.md) and the records (.json) here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def bench(args: argparse.Namespace, run: Run) -> list[dict[str, Any]]:
    """Every subject of the arguments, each job through ``run``."""
    common = {"device": args.device, "dtype": args.dtype, "check_every": args.check_every}
    methods = [m for m in args.methods.split(",") if m and (m != "auto" or "statistics" in statistics_fields(m))]
    shape, size, tokens = ("tiny", 2, 16) if args.quick else ("7b", 8, args.tokens)
    count = 2 if args.quick else args.block_batches
    block = {**common, "batches": count, "size": size, "tokens": tokens, "check_every": args.block_check_every or count}
    wanted = args.subjects.split(",")
    records = [bench_block(shape, methods, block, run)] if "block" in wanted else []
    keys = [key for key in subjects.MODELS if key in wanted and (key == "smollm2" or not args.quick)]
    lm = {**common, "batches": 2 if args.quick else args.model_batches, "size": 2 if args.quick else 8}
    lm["tokens"] = 32 if args.quick else 256
    if args.quick:  # the first two blocks only: the whole model's 120 exact solves would take ~10 s
        lm["targets"] = r"model\.layers\.[01]\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
    for key in keys:
        records.append(bench_model(key, ["exact", "sketch"], lm, run))
    return records


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments; run the benchmark (or, with ``--child``, one job of it) and print the tables."""
    args = _arguments(argv)
    if args.child:
        _child(*args.child)
        return
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    footer = None
    if args.records:  # render only: the records and the run's footer line
        loaded = json.loads(args.records.read_text())
        records, footer = loaded["records"], loaded.get("footer")
    elif not args.plan:
        with tempfile.TemporaryDirectory(prefix="eva-scale-") as folder:
            records = bench(args, functools.partial(spawn, folder=Path(folder)))
    memory = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    planned = {name: plan_table.ours_rows(name) for name in plan_table.LLAMAS} if plan_table.plan_available() else {}
    if footer is None:
        every = args.block_check_every or args.block_batches
        footer = (
            f"(total {time.perf_counter() - started:.0f} s, torch {torch.__version__}, {args.device}, {args.dtype}, "
        )
        footer += f"check_every {args.check_every} (block: {every}), rank {RANK}, rho {RHO:g})"
    settings = {"batch": plan_table.BATCH, "tokens": plan_table.TOKENS, "rank": plan_table.RANK,
                "rho": plan_table.RHO, "budgets": plan_table.BUDGETS}  # fmt: skip
    dump = {"records": records, "footer": footer, "plan": planned, "plan_settings": settings}
    text = page(dump, memory)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(dump, indent=1, default=_plain) + "\n")


def page(dump: dict[str, Any], memory: str = "peak RSS") -> str:
    """The page of an ``--out`` record (``{"records", "footer", "plan", ...}``): the measured tables, the
    planner's predictions for the same subjects against them, its 7B-70B table (the record's ``plan``) and the
    run's footer line. The predictions are ``eva_core.plan`` of today's code on the recorded settings."""
    records = dump["records"]
    parts = [report(records, memory)] if records else []
    if dump["plan"]:
        parts += [plan_table.check_report(records)] if records else []
        parts.append(plan_table.plan_report(dump["plan"]))
    return "\n\n".join([*parts, dump["footer"]]) + "\n"


def _plain(value: Any) -> Any:
    """JSON for what ``json`` cannot write: tensors as lists."""
    return value.tolist() if isinstance(value, torch.Tensor) else float(value)


if __name__ == "__main__":
    main()
