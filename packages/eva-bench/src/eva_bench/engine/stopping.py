"""The stopping benchmark: how many batches each stopping rule takes, how long, and how accurate the result
is against a large pool, on one real model per domain (``benchmarks/bench_stopping.py``).

Per model (:mod:`eva_bench.engine.suite`) the first ``cap`` batches are the fit batches, and the next
``pool`` batches (disjoint from them) the reference pool. Every method gets the same fit batches, rank 8,
rho 2, the domain plugin's default layers, at most ``cap`` batches, in its own subprocess with one torch
thread (this module re-invokes itself with ``--child``):

- ``ours``: ``eva_core.fit`` with the subspace-error rule (``tau=None``) at its default ``target_error`` (0.3);
- ``ours_tau``: ``eva_core.fit(..., tau=0.99)``, the paper's rule;
- ``peft``: peft's EVA with ``tau=0.99``, fed the same rows (:mod:`eva_bench.engine.peft_eva`);
- ``ours_t0.1``, ``ours_t0.02``: the same rule at ``target_error`` 0.1 and 0.02.

A last subprocess builds the reference (:mod:`eva_bench.engine.reference`): the exact top eigenvectors of
every targeted layer's input over the pool. It also counts, per layer, the rows of the fit batches that
the shortest of our runs measured, which must equal that run's ``rows`` (the pool is masked as fits are).
:mod:`eva_bench.engine.calibration` scores the runs. The subspace-error rule's runs are skipped (and the tables
say so) while ``EvaConfig`` refuses ``tau=None``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import calibration, suite
from .data import RANK, RHO
from .peft_eva import peft_fit
from .reference import PoolReference, count_rows, pool_reference

__all__ = ["METHODS", "bench_model", "main", "new_rule_available", "page"]

METHODS: dict[str, dict[str, Any]] = {
    "ours": {"label": "ours (target 0.3)", "kind": "ours", "tau": None},
    "ours_tau": {"label": "ours (tau 0.99)", "kind": "ours", "tau": 0.99},
    "peft": {"label": "peft (tau 0.99)", "kind": "peft", "tau": 0.99},
    "ours_t0.1": {"label": "ours (target 0.1)", "kind": "ours", "tau": None, "target_error": 0.1},
    "ours_t0.02": {"label": "ours (target 0.02)", "kind": "ours", "tau": None, "target_error": 0.02},
}
"""The methods by key: ``kind`` (``ours`` or ``peft``), ``tau`` and an optional ``target_error``."""


def new_rule_available() -> bool:
    """Whether this eva-core has the estimated-error rule (``EvaConfig(tau=None)`` is accepted)."""
    from eva_core import EvaConfig

    try:
        EvaConfig(tau=None)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def ours_fit(model: torch.nn.Module, batches: list[Any], targets: str, spec: dict[str, Any], cap: int) -> dict:
    """``eva_core.fit`` with ``spec``'s rule; per layer its components, rank, rows and source, and per
    leader the batches it measured (read by wrapping ``InputRecorder._capture``: instrumentation only)."""
    import eva_core
    from eva_core.capture import InputRecorder

    calls = {"forwards": 0}
    seen: dict[str, set[int]] = {}
    original = getattr(InputRecorder, "_capture", None)

    def recording(recorder: InputRecorder, name: str, layer_input: torch.Tensor) -> None:
        original(recorder, name, layer_input)  # type: ignore[misc]
        seen.setdefault(name, set()).add(calls["forwards"] - 1)

    def count(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls["forwards"] += 1

    fields = {"tau": spec["tau"], **({"target_error": spec["target_error"]} if "target_error" in spec else {})}
    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    if original is not None:
        InputRecorder._capture = recording  # type: ignore[method-assign]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = eva_core.fit(
                model, batches, rank=RANK, rho=RHO, target_modules=targets, progress=False, max_steps=cap, **fields
            )
    finally:
        if original is not None:
            InputRecorder._capture = original  # type: ignore[method-assign]
        handle.remove()
    layers = {
        name: {"components": layer.components.double().clone(), "rank": state.ranks[name], "rows": layer.rows,
               "source": layer.source, "converged": layer.converged}
        for name, layer in state.layers.items()
    }  # fmt: skip
    return {
        "batches": state.steps,
        "converged": len(layers) - len(state.not_converged),
        "capped": bool(state.not_converged),
        "layers": layers,
        "estimated": dict(state.extra.get("estimated_error", {})),
        "target_error": getattr(state.config, "target_error", None) if state.config.tau is None else None,
        "seen": {name: sorted(batches) for name, batches in seen.items()} if original is not None else None,
    }


def execute(job: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """Run one job (a method, or the reference) on ``model``; wall and CPU seconds are the method's alone."""
    targets = job.get("targets") or suite.default_targets(model)
    wall, cpu = time.perf_counter(), time.process_time()
    if job["kind"] == "reference":
        return {"reference": pool_reference(model, job["pool"], targets, job["k"])}
    if job["kind"] == "count":
        leader_of, counts = count_rows(model, job["batches"], targets)
        return {"leader_of": leader_of, "counts": counts}
    spec = METHODS[job["method"]]
    if spec["kind"] == "peft":
        result = peft_fit(model, job["batches"], targets, rank=RANK, rho=RHO, tau=spec["tau"], cap=job["cap"])
        result["target_error"] = None
    else:
        result = ours_fit(model, job["batches"], targets, spec, job["cap"])
    result.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu, method=job["method"])
    return result


def _child(args: argparse.Namespace) -> None:
    """One job in this fresh process: one torch thread, the model loaded, the job run, its result saved."""
    import peft.tuners.lora.eva  # noqa: F401 - imported before timing, as in every method's process
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    job = torch.load(args.job, weights_only=False)
    torch.save(execute(job, suite.load_model(job["model"])), args.result)


def spawn(job: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run ``job`` in a subprocess of this module and return its result."""
    stem = str(folder / job.get("method", job["kind"]))  # a method key may hold a dot (ours_t0.1)
    torch.save(job, f"{stem}.job.pt")
    command = [sys.executable, "-m", "eva_bench.engine.stopping", "--child", "--job", f"{stem}.job.pt"]
    subprocess.run([*command, "--result", f"{stem}.result.pt"], check=True)
    return torch.load(f"{stem}.result.pt", weights_only=False)


def bench_model(
    key: str,
    methods: list[str],
    fit: list[Any],
    pooled: list[Any],
    run: Callable[[dict[str, Any]], dict[str, Any]],
    targets: str | None = None,
    cache: Path | None = None,
) -> dict[str, Any]:
    """Every method of ``methods`` on the ``fit`` batches (all of them at most) and the reference of the
    ``pooled`` batches, on model ``key``.

    Args:
        run: ``run(job) -> result`` runs one job (:func:`spawn` into a folder, or :func:`execute` here).
        targets: a regex of layers (default: the domain plugin's).
        cache: a folder keeping references by model, targets and pool content (they depend on nothing
            else); ``None`` recomputes.

    Returns:
        the JSON-ready record of the model.
    """
    runs, skipped = {}, {}
    for method in methods:
        if METHODS[method]["tau"] is None and not new_rule_available():
            skipped[METHODS[method]["label"]] = "this eva_core's EvaConfig refuses tau=None"
            continue
        job = {"kind": "method", "method": method, "model": key, "batches": fit, "cap": len(fit), "targets": targets}
        runs[method] = run(job)
    reference = _reference(key, pooled, targets, run, cache)
    summaries = [
        {**calibration.score_run(result, reference, RANK), "label": METHODS[method]["label"]}
        for method, result in runs.items()
    ]
    default = runs.get("ours") or next(iter(runs.values()), {"layers": {}})
    ranks = {name: layer["rank"] for name, layer in default["layers"].items()}
    rows = list(reference.rows.values())
    return {
        "model": key, "name": suite.SUBJECTS[key].name, "cap": len(fit), "pool": len(pooled),
        "layers": len(reference.leader_of), "pool_rows": [min(rows), max(rows)], "summaries": summaries,
        "skipped": skipped, "noise": calibration.noise_row(reference, ranks, RANK),
        "rows_check": _rows_check(runs, fit, key, targets, run),
    }  # fmt: skip


def _reference(
    key: str,
    pooled: list[Any],
    targets: str | None,
    run: Callable[[dict[str, Any]], dict[str, Any]],
    cache: Path | None,
) -> PoolReference:
    """The pool reference, from ``cache`` when it holds one of the same model, targets and pool batches."""
    digest = hashlib.sha256(f"{key} {targets} {2 * RANK * RHO}".encode())
    for batch in pooled:
        for tensor in batch.values() if isinstance(batch, dict) else batch:
            digest.update(tensor.contiguous().numpy().tobytes())
    path = None if cache is None else cache / f"{key}-{len(pooled)}-{digest.hexdigest()[:16]}.pt"
    if path is not None and path.is_file():
        return torch.load(path, weights_only=False)
    job = {"kind": "reference", "model": key, "pool": pooled, "k": round(RHO * RANK), "targets": targets}
    reference = run(job)["reference"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(reference, path)
    return reference


def _rows_check(
    runs: dict[str, dict[str, Any]], fit: list[Any], key: str, targets: str | None, run: Callable[..., dict[str, Any]]
) -> str:
    """Whether every layer of our shortest run measured as many rows as :func:`count_rows` counts (eva-core's
    recorder, the plugin's masks) in the batches its leader measured: ``"ok (<method>)"`` or the mismatches."""
    checked = min((m for m in runs if runs[m].get("seen")), key=lambda m: runs[m]["batches"], default=None)
    if checked is None:
        return "not run"
    result = runs[checked]
    last = max(max(batches) for batches in result["seen"].values())
    counted = run({"kind": "count", "model": key, "batches": fit[: last + 1], "targets": targets})
    bad = []
    for name, layer in result["layers"].items():
        counts = counted["counts"][counted["leader_of"][name]]
        expected = sum(counts[b] for b in result["seen"].get(layer["source"], []))
        if expected != layer["rows"]:
            bad.append(f"{name}: {layer['rows']} vs {expected}")
    return f"ok ({checked})" if not bad else "MISMATCH " + "; ".join(bad[:3])


def report(records: list[dict[str, Any]]) -> str:
    """The three markdown tables."""
    return "\n\n".join(
        (calibration.results_table(records), calibration.calibration_table(records), calibration.pool_table(records))
    )


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="MiniLM only, 4 fit and 8 pool batches (a smoke test)")
    parser.add_argument("--models", default=",".join(suite.SUBJECTS), help="comma-separated keys of SUBJECTS")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated keys of METHODS")
    parser.add_argument("--pool", action="append", default=[], help="KEY=N: pool batches of a model")
    parser.add_argument("--cap", action="append", default=[], help="KEY=N: batch cap of a model")
    parser.add_argument("--out", type=Path, help="also write the tables (.md) and the records (.json) here")
    parser.add_argument("--cache", type=Path, help="keep the pool references in this folder (reused when equal)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    """Parse arguments; run the benchmark (or, with ``--child``, one job of it) and print the tables."""
    args = _arguments()
    if args.child:
        _child(args)
        return
    keys = ["minilm"] if args.quick else args.models.split(",")
    methods = [method for method in args.methods.split(",") if method]  # none: only build the references
    pools = {key: int(n) for key, n in (item.split("=") for item in args.pool)}
    caps = {key: int(n) for key, n in (item.split("=") for item in args.cap)}
    started, records = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="eva-stopping-") as folder:
        for key in keys:
            subject = suite.SUBJECTS[key]
            cap = 4 if args.quick else caps.get(key, subject.cap)
            pool = 8 if args.quick else pools.get(key, subject.pool)
            batches = suite.make_batches(key, cap + pool)
            run = functools.partial(spawn, folder=Path(folder))
            records.append(bench_model(key, methods, batches[:cap], batches[cap:], run, cache=args.cache))
    footer = f"(total {time.perf_counter() - started:.0f} s, torch {torch.__version__})"
    record = {"records": records, "footer": footer}
    text = page(record)
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=float) + "\n")


def page(record: dict[str, Any]) -> str:
    """The page of an ``--out`` record (``{"records", "footer"}``): the three tables and the run's footer line."""
    return f"{report(record['records'])}\n\n{record['footer']}\n"


if __name__ == "__main__":
    main()
