"""The runs behind ``benchmarks/report.py``: what a suite is, which of its runs a ``compare.py`` store holds,
whether the store was made with the suite's settings, and a small pool of ``compare.py`` processes for the
runs that are missing.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import repository_root
from ..processes import ProcessPool

__all__ = [
    "COMPARE",
    "Suite",
    "compare_command",
    "describe_missing",
    "load_store",
    "missing_runs",
    "run_suites",
    "settings_mismatches",
    "suite_settings",
]

ROOT = repository_root()
COMPARE = ROOT / "benchmarks" / "compare.py"
POLL_SECONDS = 2.0  # how often the pool looks at its processes
_OWN_FLAGS = ("--methods", "--seeds", "--out", "--threads", "--force")


@dataclass(frozen=True)
class Suite:
    """One task of a domain: ``compare.py <domain> <args>`` writing ``<out-dir>/<stem>.json``.

    Args:
        domain: compare.py's domain (``nlu``, ``vision``, ``llm``, ``rl``).
        task: the task's label in the table (``SST-2``).
        args: compare.py's arguments without ``--methods``, ``--seeds``, ``--out`` and ``--threads``.
        stem: the file stem of the runs, curves and figures.
        minutes: expected wall minutes of one (method, seed) run on one thread (orders the work).

    Raises:
        ValueError: ``args`` holds a flag the report sets itself.
    """

    domain: str
    task: str
    args: tuple[str, ...]
    stem: str
    minutes: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", tuple(self.args))
        own = [a for a in self.args if a in _OWN_FLAGS]
        if own:
            raise ValueError(f"Suite {self.stem!r}: args must not hold {own}; the report passes those itself.")


def load_store(path: Path) -> dict[str, Any]:
    """A compare.py store (``{"meta": ..., "runs": ...}``); empty ``meta`` and ``runs`` when absent."""
    if not path.is_file():
        return {"meta": {}, "runs": {}}
    store = json.loads(path.read_text())
    return {"meta": store.get("meta", {}), "runs": store.get("runs", {})}


def missing_runs(store: dict[str, Any], methods: Sequence[str], seeds: Sequence[int]) -> list[str]:
    """The ``"<method>/seed<N>"`` keys of ``methods`` x ``seeds`` not in ``store``."""
    return [k for m in methods for s in seeds if (k := f"{m}/seed{s}") not in store["runs"]]


def suite_settings(suite: Suite) -> dict[str, list[str]]:
    """compare.py's settings that ``suite`` sets, as its argparse keys (``--eval-at 0 4`` -> ``eval_at``)."""
    settings: dict[str, list[str]] = {"domain": [suite.domain]}
    key = None
    for token in suite.args:
        if token.startswith("--"):
            key = token[2:].replace("-", "_")
            settings[key] = []
        elif key is not None:
            settings[key].append(token)
    return settings


def _same(stored: Any, wanted: list[str]) -> bool:
    stored_list = stored if isinstance(stored, list) else [stored]
    if len(stored_list) != len(wanted):
        return False
    for have, want in zip(stored_list, wanted, strict=True):
        try:
            if not math.isclose(float(have), float(want), rel_tol=1e-9):
                return False
        except (TypeError, ValueError):
            if str(have) != want:
                return False
    return True


def settings_mismatches(suite: Suite, settings: dict[str, Any]) -> list[str]:
    """Each setting ``suite`` sets whose value differs in a store's ``meta.settings``, described in words."""
    mismatches = []
    for key, wanted in suite_settings(suite).items():
        if key not in settings:
            mismatches.append(f"{key}: not recorded in the file, the suite sets {' '.join(wanted)}")
        elif not _same(settings[key], wanted):
            mismatches.append(f"{key}: the file has {settings[key]!r}, the suite sets {' '.join(wanted)}")
    return mismatches


# --- running what is missing ------------------------------------------------------------------------
def describe_missing(keys: Sequence[str]) -> str:
    """``"<method>/seed<N>"`` keys in short: methods sharing the same missing seeds grouped,
    ``lora dora (seeds 0 1 2); eva (seed 1)``."""
    seeds: dict[str, list[str]] = {}
    for key in keys:
        method, _, seed = key.rpartition("/seed")
        seeds.setdefault(method, []).append(seed)
    groups: dict[tuple[str, ...], list[str]] = {}
    for method, missing in seeds.items():
        groups.setdefault(tuple(missing), []).append(method)
    return "; ".join(f"{' '.join(m)} (seed{'s' if len(s) > 1 else ''} {' '.join(s)})" for s, m in groups.items())


def compare_command(suite: Suite, methods: Sequence[str], seeds: Sequence[int], out_dir: Path) -> list[str]:
    """The compare.py command line of ``suite`` (one torch thread)."""
    return [
        *(sys.executable, str(COMPARE), suite.domain, *suite.args),
        *("--methods", *methods, "--seeds", *map(str, seeds), "--threads", "1", "--out", str(out_dir / suite.stem)),
    ]


def run_suites(work: Sequence[tuple[Suite, list[str], float]], jobs: int, out_dir: Path) -> list[tuple[Suite, Path]]:
    """Run each ``(suite, command, expected minutes)``, ``jobs`` processes at a time, longest expected first.

    Each process logs to ``<out-dir>/logs/<stem>.log``; on an interrupt the processes started here are
    terminated. Returns the suites whose process failed, with their logs.
    """
    queue = [(suite, command) for suite, command, _ in sorted(work, key=lambda item: -item[2])]
    failed: list[tuple[Suite, Path]] = []
    with ProcessPool[Suite](cwd=ROOT) as pool:
        while queue or pool.running:
            while queue and len(pool.running) < jobs:
                suite, command = queue.pop(0)
                log_path = out_dir / "logs" / f"{suite.stem}.log"
                print(f"[start] {suite.stem}: {shlex.join(command[1:])}\n        log: {log_path}", flush=True)
                pool.start(suite, command, log_path)
            for done in pool.finished(POLL_SECONDS):
                if done.returncode == 0:
                    print(f"[done] {done.label.stem} in {done.minutes:.1f} min", flush=True)
                else:
                    failed.append((done.label, out_dir / "logs" / f"{done.label.stem}.log"))
                    print(
                        f"[FAILED] {done.label.stem}: exit {done.returncode} after {done.minutes:.1f} min", flush=True
                    )
    return failed
