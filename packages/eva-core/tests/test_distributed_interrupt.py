"""A rank interrupted in a distributed fit (KeyboardInterrupt, SystemExit) whose process lives on, as in a
notebook: every rank must stop within seconds, not wait in a collective until the process group's timeout.

Two gloo processes on the CPU (this file run as a script, one per rank) fit the tiny model; rank 1's batch
iterator raises before its second batch. Each rank catches whatever ``fit`` raised, as a notebook cell
does, records it with the seconds the fit took, and goes on to the next fit on the same process group.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from eva_core import EvaState, fit

HERE = Path(__file__).resolve()
GROUP_TIMEOUT = 20.0  # seconds; a rank left waiting in a collective fails only after this
SETTINGS = {"rank": 4, "rho": 2.0, "tau": 0.0, "progress": False, "min_steps": 3, "max_steps": 3}


class Interrupted:
    """Yields ``batches`` but raises ``error`` before batch ``at`` (a Ctrl-C in the data loader, a
    ``sys.exit`` in user code)."""

    def __init__(self, batches: list[dict], error: BaseException, at: int) -> None:
        self.batches, self.error, self.at = batches, error, at

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(self.batches):
            if i == self.at:
                raise self.error
            yield batch


ERRORS = {  # scenario -> (the error, the batch before which rank 1 raises it)
    "keyboard": (KeyboardInterrupt, 1),
    "exit": (lambda: SystemExit(4), 1),
    "first": (KeyboardInterrupt, 0),
    "last": (KeyboardInterrupt, 2),  # after two convergence checks (statistics exchanged)
}


def worker(scenarios: list[str], rank: int, world: int, port: int, out: Path) -> int:
    """One rank: each scenario is a fit (rank 1 interrupted, except in ``after``); what it raised is written
    to ``out/<scenario>/rank<r>.error`` as ``<type>|<seconds>|<message>``; a finished fit is saved."""
    import torch.distributed as dist
    from conftest import tiny_model, token_batches

    torch.set_num_threads(1)
    timeout = timedelta(seconds=GROUP_TIMEOUT)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timeout)
    try:
        for scenario in scenarios:
            folder = out / scenario
            folder.mkdir(exist_ok=True)
            batches: object = token_batches(6)[rank::world]
            if scenario in ERRORS and rank == 1:
                make, at = ERRORS[scenario]
                batches = Interrupted(batches, make(), at)  # type: ignore[arg-type]
            started = time.monotonic()
            try:
                state = fit(tiny_model(0), batches, **SETTINGS)  # type: ignore[arg-type]
            except BaseException as exc:  # a notebook survives KeyboardInterrupt and SystemExit alike
                seconds = time.monotonic() - started
                (folder / f"rank{rank}.error").write_text(f"{type(exc).__name__}|{seconds:.2f}|{exc}")
            else:
                state.save(folder / f"rank{rank}")
    finally:
        dist.destroy_process_group()
    return 0


def launch(scenarios: list[str], world: int, out: Path, timeout: float) -> tuple[list[int | None], float]:
    """Run ``world`` ranks; their exit codes (None: killed at ``timeout``) and the seconds they took."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(HERE), ",".join(scenarios), "", str(world), str(port), str(out)]
    started = time.monotonic()
    procs = []
    for rank in range(world):
        command[3] = str(rank)
        with open(out / f"rank{rank}.log", "wb") as log:
            procs.append(subprocess.Popen(command, env=env, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT))
    codes: list[int | None] = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, started + timeout - time.monotonic())))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes, time.monotonic() - started


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("interrupted")
    codes, _ = launch([*ERRORS, "after"], 2, out, timeout=4 * GROUP_TIMEOUT)
    logs = [(out / f"rank{r}.log").read_text()[-2000:] for r in range(2)]
    assert codes == [0, 0], logs
    return out


def _error(out: Path, scenario: str, rank: int) -> tuple[str, float, str]:
    kind, seconds, message = (out / scenario / f"rank{rank}.error").read_text().split("|", 2)
    return kind, float(seconds), message


@pytest.mark.parametrize(
    ("scenario", "raised"),
    [
        ("keyboard", "KeyboardInterrupt"),
        ("exit", "SystemExit"),
        ("first", "KeyboardInterrupt"),
        ("last", "KeyboardInterrupt"),
    ],
)
def test_an_interrupted_rank_stops_every_rank_within_seconds(interrupted: Path, scenario: str, raised: str) -> None:
    """The interrupted rank re-raises its own KeyboardInterrupt / SystemExit after telling the others;
    they raise DistributedFitError naming it and the cause, long before the process group's timeout."""
    kind, seconds, _ = _error(interrupted, scenario, 1)
    assert kind == raised
    assert seconds < GROUP_TIMEOUT / 2
    kind, seconds, message = _error(interrupted, scenario, 0)
    assert kind == "DistributedFitError", message
    assert message.startswith("EVA fit on rank 0: rank(s) [1] of 2 raised while reading or running a batch")
    assert f"rank 1: {raised}" in message
    assert seconds < GROUP_TIMEOUT / 2


def test_the_process_group_is_usable_after_an_interrupt(interrupted: Path) -> None:
    """The ranks stayed in step: the next fit on the same process group runs to the end on both."""
    states = [EvaState.load(interrupted / "after" / f"rank{rank}") for rank in range(2)]
    assert states[0].ranks == states[1].ranks
    assert all(state.extra["world_size"] == 2 and state.extra["batches"] == 6 for state in states)


if __name__ == "__main__":
    names, rank_, world_, port_, out_ = sys.argv[1:]
    sys.exit(worker(names.split(","), int(rank_), int(world_), int(port_), Path(out_)))
