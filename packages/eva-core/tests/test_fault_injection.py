"""Faults injected into every file operation of ``EvaState.save`` and of checkpoint writing (issue 13).

Every write, fsync, rename and removal is a fault point. A *kill* at point k copies the folder as it is
then (a torn write leaves half of its bytes) and stops the writer, as ``kill -9`` would; a *full disk* at
point k raises ``OSError(ENOSPC)`` there (after half the bytes of a write) and lets the writer clean up.
After each fault the files on disk load as exactly the old state or exactly the new one, and a fit
resumed from the checkpoints ends as the uninterrupted fit. A few kills are real (``os._exit(137)`` in a
subprocess at the k-th operation, and SIGKILL after random delays) to check that the in-process model of
a kill is faithful.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_model, token_batches
from safetensors.torch import save_file

import eva_core.durable_files as durable_files
from eva_core import EvaConfig, EvaState, LayerSpectrum, fit
from eva_core.errors import MissingStateError
from eva_core.fitting import checkpoint

_log = logging.getLogger(__name__)  # -o log_cli=true --log-cli-level=INFO shows the counts
HERE = Path(__file__).resolve()
BATCHES = 10
EXACT = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": BATCHES, "max_steps": BATCHES, "progress": False}
SPECTRUM_FIELDS = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


class KilledError(BaseException):
    """The writer stopped dead (nothing after the fault point runs but the unwinding)."""


class Faults:
    """Counts file operations (``write``, ``fsync``, ``replace``, ``unlink``); at the ``at``-th one it
    tears the write in half (if a write) and calls ``fault(kind)``. Later operations run normally."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int, fault: Callable[[str], None]) -> None:
        self.count, self.at, self.fault, self.fired = 0, at, fault, False
        real_open, real_save_file = open, save_file
        for name in ("fsync", "replace", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        faults = self

        class File:  # EvaState.save writes through open(path, "xb")
            def __init__(self, path: Any, mode: str) -> None:
                self.handle = real_open(path, mode)

            def __enter__(self) -> File:
                return self

            def __exit__(self, *exc: object) -> None:
                self.handle.close()

            def write(self, data: bytes) -> int:
                if faults.due():
                    self.handle.write(data[: len(data) // 2])
                    self.handle.flush()
                    faults.fault("write")
                return self.handle.write(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.handle, name)

        def torn_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
            real_save_file(tensors, filename, metadata=metadata)
            if faults.due():
                data = Path(filename).read_bytes()
                Path(filename).write_bytes(data[: len(data) // 2])
                faults.fault("write")

        monkeypatch.setattr(durable_files, "open", File, raising=False)
        monkeypatch.setattr(checkpoint, "save_file", torn_save_file)

    def due(self) -> bool:
        if self.fired:
            return False
        self.count += 1
        self.fired = self.count == self.at
        return self.fired

    def _wrap(self, kind: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def operation(*args: Any, **kwargs: Any) -> Any:
            if self.due():
                self.fault(kind)
            return real(*args, **kwargs)

        return operation


def kill(folder: Path, copies: Path) -> Callable[[str], None]:
    """A fault that copies ``folder`` as a kill would leave it, then stops the writer."""

    def fault(kind: str) -> None:
        if folder.exists():
            shutil.copytree(folder, copies)
        raise KilledError(kind)

    return fault


def _test_name() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]


def full_disk(kind: str) -> None:
    if kind != "unlink":  # removing a file never needs space
        raise OSError(errno.ENOSPC, "No space left on device")


# states -------------------------------------------------------------------------------------------------
def make_state(seed: int, rank: int = 2, extra: dict | None = None) -> EvaState:
    generator = torch.Generator().manual_seed(seed)
    config = EvaConfig(rank=rank, rho=2.0)
    layers = {}
    for i, width in enumerate((6, 9)):
        k = config.max_components
        components = torch.linalg.qr(torch.randn(width, width, generator=generator))[0][:, :k].T.contiguous()
        variance = torch.rand(k, generator=generator).sort(descending=True).values + 0.1
        layers[f"l{i}"] = LayerSpectrum(
            components, variance.sqrt(), variance, variance / 10, 50 + seed, bool(i), i or None, f"l{i}"
        )
    return EvaState(layers=layers, ranks={}, steps=seed, config=config, extra=extra or {"seed": seed}).reallocate()


def same(a: EvaState, b: EvaState) -> bool:
    if (a.ranks, a.steps, a.config, a.extra, list(a.layers)) != (b.ranks, b.steps, b.config, b.extra, list(b.layers)):
        return False
    return all(
        torch.equal(getattr(a.layers[n], key), getattr(b.layers[n], key)) for n in a.layers for key in SPECTRUM_FIELDS
    )


def which(folder: Path, old: EvaState | None, new: EvaState) -> str:
    """'old' or 'new': the state the folder loads as (anything else fails the test)."""
    try:
        loaded = EvaState.load(folder)
    except MissingStateError:
        assert old is None, f"{sorted(p.name for p in folder.iterdir())}: the old state is gone"
        return "old"
    if old is not None and same(loaded, old):
        return "old"
    assert same(loaded, new), "the folder holds a state that is neither the old one nor the new one"
    return "new"


@pytest.mark.parametrize("has_old", [True, False], ids=["over-a-state", "into-a-new-folder"])
def test_a_save_killed_at_every_file_operation_leaves_old_or_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_old: bool
) -> None:
    old, new = (make_state(1) if has_old else None), make_state(2, rank=3)
    outcomes = []
    for at in range(1, 40):
        folder, copies = tmp_path / f"run{at}", tmp_path / f"killed{at}"
        if old is not None:
            old.save(folder)
        with monkeypatch.context() as patch:
            faults = Faults(patch, at, kill(folder, copies))
            with contextlib.suppress(KilledError):
                new.save(folder)
        if not faults.fired:
            break
        outcomes.append(which(copies, old, new) if copies.exists() else "old")
        new.save(copies if copies.exists() else folder)  # a later save over the debris succeeds
        assert which(copies if copies.exists() else folder, old, new) == "new"
    _log.info("%s: %d faults injected", _test_name(), len(outcomes))
    assert len(outcomes) >= 6 and outcomes[0] == "old" and outcomes[-1] == "new", outcomes
    assert outcomes == sorted(outcomes, key=["old", "new"].index)  # one commit point: old ... old new ... new


def test_a_save_on_a_full_disk_leaves_the_old_state_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = make_state(1), make_state(2, rank=3)
    old.save(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    failed = 0
    for at in range(1, 40):
        with monkeypatch.context() as patch:
            faults = Faults(patch, at, full_disk)
            try:
                new.save(tmp_path)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                failed += 1
                assert which(tmp_path, old, new) == "old"
                assert sorted(p.name for p in tmp_path.iterdir()) == before  # no half-written file left
                continue
        if not faults.fired:
            break
        assert which(tmp_path, old, new) == "new"  # the fault hit a removal after the commit: ignored
        old.save(tmp_path)
        before = sorted(p.name for p in tmp_path.iterdir())
    _log.info("%s: %d faults injected", _test_name(), at - 1)
    assert failed >= 5


# checkpoints ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference() -> EvaState:
    return fit(tiny_model(0), token_batches(BATCHES), **EXACT)


def resumes_to(folder: Path, reference: EvaState) -> None:
    state = fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=folder, resume=True, **EXACT)
    assert (state.steps, state.ranks, state.extra["history"]) == (
        reference.steps,
        reference.ranks,
        reference.extra["history"],
    )
    for name, layer in reference.layers.items():
        torch.testing.assert_close(state.layers[name].components, layer.components, rtol=1e-5, atol=1e-5)


def test_checkpoint_writing_killed_at_every_file_operation_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: EvaState
) -> None:
    """Checkpoints after 3, 6 and 9 batches; the fit is killed at each file operation of writing them in
    turn; the folder as the kill left it resumes to the uninterrupted fit's result."""
    killed = 0
    for at in range(1, 40):
        folder, copies = tmp_path / f"run{at}", tmp_path / f"killed{at}"
        with monkeypatch.context() as patch:
            faults = Faults(patch, at, kill(folder, copies))
            with contextlib.suppress(KilledError):
                fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=folder, checkpoint_every=3, **EXACT)
        if not faults.fired:
            break
        killed += 1
        resumes_to(copies, reference)
    _log.info("%s: %d faults injected", _test_name(), killed)
    assert killed >= 9


def test_checkpoint_writing_on_a_full_disk_fails_cleanly_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: EvaState
) -> None:
    failed = 0
    for at in range(1, 40):
        folder = tmp_path / f"run{at}"
        with monkeypatch.context() as patch:
            faults = Faults(patch, at, full_disk)
            try:
                fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=folder, checkpoint_every=3, **EXACT)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                failed += 1
        if not faults.fired:
            break
        assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # no half-written file left
        resumes_to(folder, reference)
    _log.info("%s: %d faults injected", _test_name(), at - 1)
    assert failed >= 6


# real kills ----------------------------------------------------------------------------------------------
def run_killed(mode: str, folder: Path, at: int) -> None:
    """Run the writer in a subprocess that ``os._exit(137)``s at its ``at``-th file operation."""
    proc = subprocess.run(
        [sys.executable, str(HERE), mode, str(folder), str(at)],
        cwd=HERE.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1", "EVA_DISABLE_PLUGINS": "*"},
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 137, proc.stderr.decode()[-2000:]


def test_saves_sigkilled_after_random_delays_leave_one_whole_state(tmp_path: Path) -> None:
    """A process saves two states in turn into one folder, as fast as it can; SIGKILL after a random
    delay (seeded) lands mid-save most of the time; the folder then loads as one of the two, whole."""
    states = [make_state(1), make_state(2, rank=3)]
    delays = random.Random(13).sample(range(10, 300), 2)
    for delay in delays:
        marker = tmp_path / "saving"
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, str(HERE), "loop", str(tmp_path / "state"), str(marker)],
            cwd=HERE.parent,
            env={**os.environ, "OMP_NUM_THREADS": "1", "EVA_DISABLE_PLUGINS": "*"},
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert marker.exists(), f"the saving process never started (exit code {proc.poll()})"
            time.sleep(delay / 1000)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        which(tmp_path / "state", states[0], states[1])
    _log.info("%s: %d faults injected", _test_name(), len(delays))


def test_checkpoint_writing_really_killed_resumes(tmp_path: Path, reference: EvaState) -> None:
    run_killed("checkpoint", tmp_path, 7)  # the second checkpoint's rename
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".eva-fit.rank0-of1.step00000006.safetensors.tmp",
        "eva-fit.rank0-of1.step00000003.safetensors",
    ]
    resumes_to(tmp_path, reference)


def _save_in_a_loop(folder: Path, marker: Path) -> None:
    states = [make_state(1), make_state(2, rank=3)]
    states[0].save(folder)
    marker.write_text("saving")
    for turn in range(10**6):
        states[turn % 2].save(folder)


def _child(mode: str, folder: Path, at: int) -> None:
    def die(kind: str) -> None:
        os._exit(137)

    patch = pytest.MonkeyPatch()
    Faults(patch, at, die)
    if mode == "state":
        make_state(2, rank=3).save(folder)
    else:
        fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=folder, checkpoint_every=3, **EXACT)
    os._exit(0)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "loop":
        _save_in_a_loop(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        _child(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
