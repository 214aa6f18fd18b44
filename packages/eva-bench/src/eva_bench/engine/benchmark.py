"""Benchmark ``eva_core.fit`` against peft's EVA and plain forward passes, on real models and text.

For each model the same list of batches feeds every method. Each method runs in its own subprocess
(this module re-invokes itself with ``--child``) with one torch thread, so its peak RSS is its own:

* ``eva_core``: ``eva_core.fit(model, batches, rank=8, rho=2, tau=0.99, max_steps=cap)``;
* ``peft``: ``peft.tuners.lora.eva.get_eva_state_dict`` with the same targets, rank, rho and tau (peft
  cycles its dataloader until every layer converges; a forward pre-hook stops it after ``cap`` batches);
* ``forward``: plain ``model(**batch)`` under ``torch.no_grad``, timed batch by batch, so each method
  can be set against the forward passes over the batches it consumed.

A last subprocess measures the exact answer: per layer, the float64 eigendecomposition of the centered
scatter matrix of the rows (attention-masked tokens) of exactly the batches that layer measured in that
method, and the distance ``1 - |cos|`` between each allocated component and the exact one.

Usage: ``python benchmarks/bench_core.py --out docs/results/engine`` (full, ~20 CPU-minutes) or ``--quick``
(a smoke test).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from . import data
from .data import RANK, RHO, TAU
from .exact import run_exact
from .peft_eva import layer_owners, peft_allocation


class _CapReached(Exception):  # noqa: N818 - control flow
    """Raised from a forward pre-hook to stop peft's endless cycling once the batch cap is reached."""


def peak_rss_mb() -> float:
    """The peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_eva_core(model: torch.nn.Module, batches: list, targets: str, cap: int) -> dict:
    """Fit with eva_core; per layer, its allocated components and the batches its statistics hold.

    A layer that converged and was reopened skips the batches in between, so the batches are recorded
    by wrapping ``InputRecorder._capture`` (benchmark instrumentation only; the fit is unchanged).
    """
    import eva_core
    from eva_core.capture import InputRecorder

    calls = {"forwards": 0}
    seen: dict[str, list[int]] = {}
    original = InputRecorder._capture  # wrapped to learn which batches each measured input absorbed

    def recording(recorder: InputRecorder, name: str, layer_input: torch.Tensor) -> None:
        original(recorder, name, layer_input)
        seen.setdefault(name, []).append(calls["forwards"] - 1)

    def count(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls["forwards"] += 1

    InputRecorder._capture = recording
    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = eva_core.fit(
                model, batches, rank=RANK, rho=RHO, tau=TAU, target_modules=targets, progress=False, max_steps=cap
            )
    finally:
        InputRecorder._capture = original
        handle.remove()
    layers = {}
    for name, layer in state.layers.items():
        layers[name] = {
            "components": layer.components[: state.ranks[name]].clone(),
            "rows": layer.rows,
            "batches": sorted(set(seen[layer.source])),
            "converged_at": layer.converged_at,
        }
    pending = len(state.not_converged)
    return {"batches": state.steps, "layers": layers, "converged": len(layers) - pending, "capped": pending > 0}


def run_peft(model: torch.nn.Module, batches: list, targets: str, cap: int) -> dict:
    """Fit with peft's EVA, recording which batches each SVD hook absorbed; stop after ``cap`` batches."""
    from peft import LoraConfig
    from peft.tuners.lora import eva as peft_eva
    from peft.tuners.lora.config import EvaConfig

    calls = {"forwards": 0}
    seen: dict[str, list[int]] = {}
    hooks: dict[str, object] = {}

    def count(module: torch.nn.Module, args: tuple) -> None:
        if calls["forwards"] >= cap + 1:  # the hashing pass on batch 0, then cap measured batches
            raise _CapReached
        calls["forwards"] += 1

    original = peft_eva.SVDHook.__call__

    def recording(hook: object, module: torch.nn.Module, inputs: tuple, output: object) -> None:
        before = int(getattr(hook.svd, "n_samples_seen_", torch.zeros(1)).sum())
        original(hook, module, inputs, output)
        if int(getattr(hook.svd, "n_samples_seen_", torch.zeros(1)).sum()) > before:
            seen.setdefault(hook.name, []).append((calls["forwards"] - 2) % len(batches))
            hooks[hook.name] = hook

    peft_eva.SVDHook.__call__ = recording
    handle = model.register_forward_pre_hook(count)
    config = LoraConfig(r=RANK, target_modules=targets, init_lora_weights="eva", eva_config=EvaConfig(rho=RHO, tau=TAU))
    names = data.target_names(model, targets)
    try:
        state = peft_eva.get_eva_state_dict(model, batches, peft_config=config, show_progress_bar=False)
        capped = False
    except _CapReached:
        state, capped = _capped_components(hooks, names), True
    finally:
        handle.remove()
        peft_eva.SVDHook.__call__ = original
    layers = {}
    for name, leader in layer_owners(names, hooks).items():
        layers[name] = {
            "components": state[name].detach().clone(),
            "batches": sorted(set(seen[leader])),
            "rows": int(hooks[leader].svd.n_samples_seen_.sum()),
        }
    converged = sum(
        bool(hooks[owner].converged[: len(state[name])].all()) for name, owner in layer_owners(names, hooks).items()
    )
    return {"batches": calls["forwards"], "layers": layers, "converged": converged, "capped": capped}


def _capped_components(hooks: dict, names: list[str]) -> dict[str, torch.Tensor]:
    """peft's rank allocation (:func:`eva_bench.engine.peft_eva.peft_allocation`) for a run stopped before
    convergence: layer -> its leader's top components."""
    owner, ranks = layer_owners(names, hooks), peft_allocation(hooks, names, RANK, RHO)
    return {name: hooks[owner[name]].svd.components_[: ranks[name]] for name in names}


def run_forward(model: torch.nn.Module, batches: list) -> dict:
    """Plain forward passes under ``torch.no_grad``: per-batch wall and CPU seconds."""
    wall, cpu = [], []
    with torch.no_grad():
        for batch in batches:
            w, c = time.perf_counter(), time.process_time()
            model(**batch)
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
    return {"batches": len(batches), "wall_per_batch": wall, "cpu_per_batch": cpu}


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: load the model, run ``args.child``, save the result."""
    import peft.tuners.lora.eva  # noqa: F401 - every method's baseline RSS includes both libraries
    from transformers.utils import logging as hf_logging

    import eva_core  # noqa: F401

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    job = torch.load(args.job, weights_only=False)
    bench = data.BENCHES[job["model"]]
    model = data.load_model(job["model"])
    batches = job["batches"]
    base = peak_rss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    if args.child == "eva_core":
        result = run_eva_core(model, batches, bench.targets, job["cap"])
    elif args.child == "peft":
        result = run_peft(model, batches, bench.targets, job["cap"])
    elif args.child == "forward":
        result = run_forward(model, batches[: job["count"]])
    else:
        result = run_exact(model, batches, bench.targets, job["runs"])
    result.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, rss=peak_rss_mb(), rss_base=base)
    torch.save(result, args.result)


def spawn(method: str, job: dict, folder: Path) -> dict:
    """Run ``method`` on ``job`` in a subprocess of this script and return its result."""
    job_file, result_file = folder / f"{method}.job.pt", folder / f"{method}.result.pt"
    torch.save(job, job_file)
    command = [sys.executable, "-m", __name__, "--child", method, "--job", str(job_file), "--result", str(result_file)]
    subprocess.run(command, check=True)
    return torch.load(result_file, weights_only=False)


def bench_model(key: str, cap: int, folder: Path) -> list[dict]:
    """All methods on model ``key`` over the same ``cap`` batches; one summary row per method."""
    batches = data.batches(key, cap)
    job = {"model": key, "batches": batches, "cap": cap}
    runs = {method: spawn(method, job, folder) for method in ("eva_core", "peft")}
    count = max(run["batches"] for run in runs.values())
    forward = spawn("forward", {**job, "count": count}, folder)
    exact = spawn("exact", {**job, "runs": runs}, folder)
    rows = [
        {
            "model": data.BENCHES[key].name,
            "method": "forward",
            "batches": count,
            "wall": sum(forward["wall_per_batch"]),
            "cpu": sum(forward["cpu_per_batch"]),
            "rss": forward["rss"],
            "rss_delta": forward["rss"] - forward["rss_base"],
        }
    ]
    for method, run in runs.items():
        n = run["batches"]
        rows.append(
            {
                "model": data.BENCHES[key].name,
                "method": method,
                "batches": n,
                "wall": run["wall"],
                "cpu": run["cpu"],
                "x_forward": run["wall"] / sum(forward["wall_per_batch"][:n]),
                "x_forward_cpu": run["cpu"] / sum(forward["cpu_per_batch"][:n]),
                "rss": run["rss"],
                "rss_delta": run["rss"] - run["rss_base"],
                "converged": f"{run['converged']}/{len(run['layers'])}" + (" (cap)" if run["capped"] else ""),
                "cos_mean": exact[method]["mean"],
                "cos_max": exact[method]["max"],
                "cos_worst": exact[method]["worst"],
                "rows_ok": all(layer["rows"] == _rows(batches, layer["batches"]) for layer in run["layers"].values()),
            }
        )
    rows[-1]["vs_eva_core"] = rows[-1]["wall"] / rows[-2]["wall"]
    rows[-1]["vs_eva_core_cpu"] = rows[-1]["cpu"] / rows[-2]["cpu"]
    return rows


def _rows(batches: list, used: list[int]) -> int:
    """The attention-masked rows of the batches ``used``."""
    return int(sum(batches[b]["attention_mask"].sum() for b in used))


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    head = (
        "| model | method | batches | wall s | CPU s | wall / forward | CPU / forward | peak RSS MiB | "
        "ΔRSS MiB | converged | mean 1-\\|cos\\| | max 1-\\|cos\\| | worst 1-\\|cos\\| | wall / eva_core |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]

    def cell(row: dict, field: str, fmt: str) -> str:
        return format(row[field], fmt) if field in row else "-"

    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['batches']} | {r['wall']:.1f} | {r['cpu']:.1f} | "
            f"{cell(r, 'x_forward', '.2f')} | {cell(r, 'x_forward_cpu', '.2f')} | {r['rss']:.0f} | "
            f"{r['rss_delta']:.0f} | {r.get('converged', '-')} | {cell(r, 'cos_mean', '.1e')} | "
            f"{cell(r, 'cos_max', '.1e')} | {cell(r, 'cos_worst', '.1e')} | {cell(r, 'vs_eva_core', '.2f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments; run the benchmark (or, with ``--child``, one measurement of it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 batches of MiniLM only (a smoke test)")
    parser.add_argument("--models", default="minilm,smollm2", help="comma-separated: minilm, smollm2")
    parser.add_argument("--max-batches", type=int, help="override every model's batch cap")
    parser.add_argument(
        "--out", type=Path, help="also write the record (.json) and its page (.md) here, e.g. docs/results/engine"
    )
    parser.add_argument("--child", choices=("eva_core", "peft", "forward", "exact"), help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    keys = ["minilm"] if args.quick else args.models.split(",")
    data.data_dir()  # fail early, naming EVA_DATA_DIR, when the data is missing
    started, commit = time.perf_counter(), _commit()  # the commit measured, before any later one
    rows = []
    with tempfile.TemporaryDirectory(prefix="eva-bench-") as folder:
        for key in keys:
            cap = 3 if args.quick else args.max_batches or data.BENCHES[key].max_batches
            rows += bench_model(key, cap, Path(folder))
    record = {"meta": _meta(time.perf_counter() - started, commit), "rows": rows}
    text = page(record)
    print(text)
    if args.out:
        _write(args.out, record, text)


def _meta(seconds: float, commit: str) -> dict[str, Any]:
    """What the record keeps of this run: the command, the commit, the software, the date and the total wall
    time."""
    import peft
    import transformers

    return {
        "command": "python benchmarks/bench_core.py " + " ".join(sys.argv[1:]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "threads": 1,
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "seconds": round(seconds),
    }


def _commit() -> str:
    """The repository's short commit hash (``"unknown"`` outside a git checkout)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=data.REPO_ROOT)
    return done.stdout.strip() or "unknown"


def page(record: dict[str, Any]) -> str:
    """The markdown page of a record (``{"meta", "rows"}``): the table, a warning where a method's rows do
    not match the batches it recorded, and the run's software and duration. A pure function of ``record``."""
    rows, meta = record["rows"], record["meta"]
    text = table(rows)
    mismatched = [f"{row['model']} {row['method']}" for row in rows if row.get("rows_ok") is False]
    if mismatched:  # the exact reference would then be built from other rows than the method saw
        text += f"\n\nWARNING: rows seen do not match the batches recorded for: {', '.join(mismatched)}"
    run = f"`{meta['command']}` at commit `{meta['commit']}`: {meta['seconds']} s in all on {meta['date']}"
    software = (
        f"Python {meta['python']}, torch {meta['torch']}, transformers {meta['transformers']}, peft {meta['peft']}"
    )
    return f"{text}\n\n({run}; {software}, one torch thread)\n"


def _write(out: Path, record: dict[str, Any], text: str) -> None:
    """``out``.json (the record) and ``out``.md (its page), each written atomically (a temporary file renamed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, content in ((".json", json.dumps(record, indent=2) + "\n"), (".md", text)):
        temporary = out.with_suffix(suffix + ".tmp")
        temporary.write_text(content)
        temporary.replace(out.with_suffix(suffix))


if __name__ == "__main__":
    main()
