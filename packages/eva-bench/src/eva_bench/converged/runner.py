"""Running converged runs: one run in this process (:func:`run_one`), or every run a task needs, a few
processes at a time with one torch thread each (:func:`run_needed`), re-planning after each finishes.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch

from ..paths import repository_root
from ..records import RunRecord
from .cache import RunKey, cached_runs, run_path, save_run
from .protocol import TaskProtocol, get_protocol
from .selection import needed_runs

__all__ = ["SCRIPT", "run_one", "run_needed", "single_run_command"]

_log = logging.getLogger(__name__)

SCRIPT = repository_root() / "benchmarks" / "converged.py"
POLL_SECONDS = 2.0


def _finetune(protocol: TaskProtocol, key: RunKey) -> RunRecord:
    """The domain's fine-tuning run for ``key`` under ``protocol``."""
    common: dict[str, Any] = {
        "steps": protocol.steps,
        "eval_at": protocol.eval_at,
        "seed": key.seed,
        "lr": key.lr,
        "eva_overrides": dict(key.setting) or None,
        **protocol.finetune,
    }
    if protocol.domain == "nlu":
        from ..nlu import finetune, shared_glue_path

        task = common.pop("task")
        train, dev = shared_glue_path(task, "train"), shared_glue_path(task, "dev")
        return finetune(protocol.model, task, key.method, train=train, dev=dev, **common)
    if protocol.domain == "vision":
        from ..vision.recipe import finetune as vision_finetune

        return vision_finetune(protocol.model, common.pop("task"), key.method, **common)
    if protocol.domain == "rl":
        from ..rl import finetune as rl_finetune
        from ..rl import pretrain

        if not Path(protocol.model).exists():  # an alias: its datasets and model are built once (cached)
            pretrain(protocol.model)
        return rl_finetune(protocol.model, common.pop("task"), key.method, **common)
    from eva_llm.cli import MODEL_ALIASES

    from ..llm.recipe import finetune as llm_finetune

    return llm_finetune(MODEL_ALIASES[protocol.model](), method=key.method, **common)


def run_one(cache: Path, key: RunKey) -> Path:
    """Run ``key`` here and cache it (a run whose loss became NaN or inf is cached as diverged)."""
    protocol = get_protocol(key.task)
    wall, cpu = time.perf_counter(), time.process_time()
    result: dict[str, Any]
    try:
        result = {"record": _finetune(protocol, key).to_json()}
    except FloatingPointError as error:  # too high a learning rate: a result of the grid, not a failure
        result = {"diverged": str(error)}
    result |= {
        "cpu_seconds": time.process_time() - cpu,
        "wall_seconds": time.perf_counter() - wall,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    return save_run(cache, key, protocol, result)


def single_run_command(cache: Path, key: RunKey) -> list[str]:
    """The command line that runs ``key`` alone in a new process."""
    setting = [f"{name}={value}" for name, value in key.setting]
    return [
        *(sys.executable, str(SCRIPT), "--cache", str(cache), "--one", key.task, key.method, f"{key.lr:g}"),
        *(str(key.seed), *setting),
    ]


def _pending(cache: Path, protocols: Sequence[TaskProtocol], busy: set[RunKey]) -> list[RunKey]:
    """Runs that can start now, task by task in ``protocols`` order, skipping those in flight."""
    keys = []
    for protocol in protocols:
        runs, _ = cached_runs(cache, protocol)
        keys += [key for key in needed_runs(protocol, runs) if key not in busy]
    return keys


def run_needed(cache: Path, protocols: Sequence[TaskProtocol], jobs: int, logs: Path) -> list[RunKey]:
    """Run every run the tasks still need, ``jobs`` processes at a time; returns the runs that failed.

    Each process logs to ``<logs>/<task>/<run>.log``; on an interrupt the processes started here are
    terminated (their runs were not cached, so they rerun next time).
    """
    running: dict[RunKey, tuple[subprocess.Popen[bytes], IO[bytes], float]] = {}
    failed: list[RunKey] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        while True:
            pending = [key for key in _pending(cache, protocols, set(running)) if key not in failed]
            while pending and len(running) < jobs:
                key = pending.pop(0)
                log_path = logs / key.task / f"{key.label()}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log: IO[bytes] = log_path.open("wb")
                command = single_run_command(cache, key)
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
                running[key] = (process, log, time.perf_counter())
                _log.info("[start] %s (log %s)", key.label(), log_path)
            if not running:
                return failed
            time.sleep(POLL_SECONDS)
            for key, (process, log, started) in list(running.items()):
                if process.poll() is None:
                    continue
                log.close()
                del running[key]
                minutes = (time.perf_counter() - started) / 60
                if process.returncode == 0 and run_path(cache, key).is_file():
                    _log.info("[done] %s/%s in %.1f min", key.task, key.label(), minutes)
                else:
                    failed.append(key)
                    _log.error(
                        "[FAILED] %s/%s: exit %s after %.1f min", key.task, key.label(), process.returncode, minutes
                    )
    finally:
        for process, log, _ in running.values():
            process.terminate()
            process.wait()
            log.close()
