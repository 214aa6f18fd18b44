"""Running converged runs: one run in this process (:func:`run_one`), or every run a task needs, a few
processes at a time with one torch thread each (:func:`run_needed`), re-planning after each finishes.
"""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..paths import repository_root
from ..processes import ProcessPool
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
    failed: list[RunKey] = []
    with ProcessPool[RunKey]() as pool:
        finished = True  # the cache is read again only when a run has ended, not at every poll
        while True:
            pending = [k for k in _pending(cache, protocols, set(pool.running)) if k not in failed] if finished else []
            for key in pending[: max(0, jobs - len(pool.running))]:
                log_path = logs / key.task / f"{key.label()}.log"
                pool.start(key, single_run_command(cache, key), log_path)
                _log.info("[start] %s/%s (log %s)", key.task, key.label(), log_path)
            if not pool.running:
                return failed
            ended = pool.finished(POLL_SECONDS)
            finished = bool(ended)
            for done in ended:
                if done.returncode == 0 and run_path(cache, done.label).is_file():
                    _log.info("[done] %s/%s in %.1f min", done.label.task, done.label.label(), done.minutes)
                else:
                    failed.append(done.label)
                    _log.error("[FAILED] %s/%s: exit %s", done.label.task, done.label.label(), done.returncode)
