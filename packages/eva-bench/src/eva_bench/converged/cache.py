"""The converged runs on disk: one JSON file per run, ``<cache>/<task>/<method>_lr<lr>[_<setting>]_seed<N>.json``.

A file is written once, atomically (a temporary file renamed over nothing), so an interrupted report loses
only the runs in flight and a committed cache grows run by run. Each file holds the run's key, the task
protocol's settings it ran under, the run record (validation ``curve``, held-out ``held_out``), its CPU and
wall seconds and the software it ran on.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .protocol import TaskProtocol

__all__ = ["RunKey", "cached_runs", "run_path", "save_run"]


@dataclass(frozen=True, order=True)
class RunKey:
    """One run: a method at a learning rate and key setting (``{}``: the default) on a task, for a seed."""

    task: str
    method: str
    lr: float
    seed: int
    setting: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def of(cls, task: str, method: str, lr: float, seed: int, setting: Mapping[str, Any] | None = None) -> RunKey:
        return cls(task, method, float(lr), int(seed), tuple(sorted((setting or {}).items())))

    def label(self) -> str:
        """``eva_lr0.0015_rho1_seed0``: the file stem (setting values are numbers)."""
        setting = "".join(f"_{name}{value:g}" for name, value in self.setting)  # 1 and 1.0 name one file
        return f"{self.method}_lr{self.lr:g}{setting}_seed{self.seed}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "setting": dict(self.setting)}


def run_path(cache: Path, key: RunKey) -> Path:
    """Where ``key``'s run lives under ``cache``."""
    return cache / key.task / f"{key.label()}.json"


def save_run(cache: Path, key: RunKey, protocol: TaskProtocol, run: Mapping[str, Any]) -> Path:
    """Write ``run`` (a record plus costs) for ``key`` atomically; returns its path.

    Raises:
        FileExistsError: the run is already cached (a cache is never overwritten; delete the file to redo).
    """
    path = run_path(cache, key)
    if path.exists():
        raise FileExistsError(f"{path} exists; delete it to run {key.label()} again.")
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"key": key.to_json(), "protocol": protocol.settings(), **run}, indent=1, sort_keys=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(body + "\n")
        os.link(temporary, path)  # fails if another process wrote it meanwhile: nothing is overwritten
    finally:
        os.unlink(temporary)
    return path


def cached_runs(cache: Path, protocol: TaskProtocol) -> tuple[dict[RunKey, dict[str, Any]], list[Path]]:
    """The task's cached runs made under ``protocol``, by key, and the files made under other settings.

    Raises:
        ValueError: a cache file is not a run record (a hand edit or a copy cut short); names the file.
    """
    runs: dict[RunKey, dict[str, Any]] = {}
    stale: list[Path] = []
    settings = json.loads(json.dumps(protocol.settings()))  # as a file holds them (tuples become lists)
    for path in sorted((cache / protocol.name).glob("*.json")):
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a run record ({error}); delete it and the run is redone.") from error
        if stored["protocol"] != settings:
            stale.append(path)
            continue
        key = stored["key"]
        runs[RunKey.of(key["task"], key["method"], key["lr"], key["seed"], key["setting"])] = stored
    return runs, stale
