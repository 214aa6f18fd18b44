"""A few child processes at a time, each logging to its own file, all stopped if the parent is interrupted:
what the reports use to run one (method, seed) or one suite per process with one torch thread each."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Generic, TypeVar

__all__ = ["Finished", "ProcessPool"]

Label = TypeVar("Label", bound=Hashable)


@dataclass(frozen=True)
class Finished(Generic[Label]):
    """A process that exited: its label, exit status and wall minutes."""

    label: Label
    returncode: int
    minutes: float


class ProcessPool(Generic[Label]):
    """Child processes by label, with one torch thread each (``OMP_NUM_THREADS=1``); as a context manager,
    every process still running when the block exits is terminated, on an exception, Ctrl-C or a SIGTERM
    to this process alike (a SIGTERM is turned into ``SystemExit`` while the block runs)."""

    def __init__(self, cwd: Path | None = None) -> None:
        self.cwd = cwd
        self.running: dict[Label, tuple[subprocess.Popen[bytes], IO[bytes], float]] = {}
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def start(self, label: Label, command: Sequence[str], log_path: Path) -> None:
        """Run ``command`` as ``label``, its stdout and stderr into ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes] = log_path.open("wb")
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd, env=self.env)
        self.running[label] = (process, log, time.perf_counter())

    def finished(self, poll_seconds: float) -> list[Finished[Label]]:
        """Wait ``poll_seconds``, then return (and forget) the processes that exited."""
        time.sleep(poll_seconds)
        done = []
        for label, (process, log, started) in list(self.running.items()):
            if process.poll() is not None:
                log.close()
                del self.running[label]
                done.append(Finished(label, process.returncode, (time.perf_counter() - started) / 60))
        return done

    def __enter__(self) -> ProcessPool[Label]:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if hasattr(self, "_previous"):
            signal.signal(signal.SIGTERM, self._previous)

    def stop(self) -> None:
        """Terminate every process still running (an interrupted parent leaves none behind)."""
        for process, log, _ in self.running.values():
            process.terminate()
            process.wait()
            log.close()
        self.running.clear()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
