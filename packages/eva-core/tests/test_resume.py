"""Resumable fits (checkpoints, kill -9, resume) and offline re-budgeting of a fitted state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import WIDTH, tiny_model, token_batches
from torch import nn

from eva_core import EvaState, fit
from eva_core.errors import CheckpointMismatchError, InvalidConfigError, NotConvergedWarning

HERE = Path(__file__).resolve()
BATCHES = 12
EXACT = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": BATCHES, "max_steps": BATCHES, "progress": False}


def assert_same_state(state: EvaState, reference: EvaState) -> None:
    """The same fit: steps, ranks, convergence record and history, and spectra equal to float tolerance."""
    assert (state.steps, state.ranks) == (reference.steps, reference.ranks)
    assert state.extra["history"] == reference.extra["history"]
    for name, ref in reference.layers.items():
        layer = state.layers[name]
        assert (layer.rows, layer.converged_at, layer.source) == (ref.rows, ref.converged_at, ref.source), name
        torch.testing.assert_close(layer.components, ref.components, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.explained_variance, ref.explained_variance, rtol=1e-5, atol=1e-7)


class Stalling:
    """Yields ``batches``; before batch ``stall_at`` it touches ``marker`` and sleeps (to be killed)."""

    def __init__(self, batches: list[dict], stall_at: int, marker: Path) -> None:
        self.batches, self.stall_at, self.marker = batches, stall_at, marker

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(self.batches):
            if i == self.stall_at:
                self.marker.write_text(str(i))
                time.sleep(120)
            yield batch


def test_fit_killed_mid_way_resumes_to_the_same_result(tmp_path) -> None:
    """A fit writing a checkpoint every 3 batches is SIGKILLed while waiting for its 8th batch; the
    resumed fit (same batches) skips the 6 consumed ones and ends as the uninterrupted fit does."""
    marker = tmp_path / "stalled"
    checkpoints = tmp_path / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, str(HERE), str(checkpoints), str(marker)],
        cwd=HERE.parent,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), f"the fit never reached its 8th batch (exit code {proc.poll()})"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    written = sorted(path.name for path in checkpoints.iterdir())
    assert written == [  # the two latest, no temporary file left
        "eva-fit.rank0-of1.step00000003.safetensors",
        "eva-fit.rank0-of1.step00000006.safetensors",
    ]
    consumed = []
    resumed = fit(
        tiny_model(0), Recording(token_batches(BATCHES), consumed), checkpoint_dir=checkpoints, resume=True, **EXACT
    )
    assert consumed == list(range(BATCHES))  # the iterable is read from the start, 6 batches are skipped
    assert_same_state(resumed, fit(tiny_model(0), token_batches(BATCHES), **EXACT))


class Recording:
    def __init__(self, batches: list[dict], seen: list[int]) -> None:
        self.batches, self.seen = batches, seen

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(self.batches):
            self.seen.append(i)
            yield batch


class FitInterruptedError(Exception):
    pass


def breaking(batches: list[dict], at: int):  # type: ignore[no-untyped-def]
    for i, batch in enumerate(batches):
        if i == at:
            raise FitInterruptedError
        yield batch


@pytest.mark.parametrize("rule", [{"tau": 0.9}, {"tau": None, "target_error": 0.1}], ids=["cosine", "error"])
@pytest.mark.parametrize("gram_memory_bytes", [4 * 1024**3, 0], ids=["exact", "sketch"])
def test_resume_keeps_convergence_progress(tmp_path, gram_memory_bytes, rule) -> None:
    """Layers converge at different batches (checked every 2): a fit interrupted after 7 batches
    (checkpoint at 6) and resumed gives the same steps, convergence batches, ranks and spectra (and, with
    the subspace-error rule, the same estimates: its snapshots travel in the checkpoint)."""
    settings = {
        "rank": 3,
        **rule,
        "check_every": 2,
        "max_steps": BATCHES,
        "progress": False,
        "gram_memory_bytes": gram_memory_bytes,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        reference = fit(tiny_model(0), token_batches(BATCHES), **settings)
        assert len({layer.converged_at for layer in reference.layers.values()}) > 1
        assert reference.steps > 6
        with pytest.raises(FitInterruptedError):
            fit(
                tiny_model(0),
                breaking(token_batches(BATCHES), 7),
                checkpoint_dir=tmp_path,
                checkpoint_every=3,
                **settings,
            )
        resumed = fit(tiny_model(0), token_batches(BATCHES), resume_from=tmp_path, **settings)
    assert_same_state(resumed, reference)
    assert resumed.extra.get("estimated_error") == reference.extra.get("estimated_error")


def test_resume_true_without_checkpoint_starts_afresh(tmp_path) -> None:
    state = fit(
        tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path, checkpoint_every=5, resume=True, **EXACT
    )
    assert_same_state(state, fit(tiny_model(0), token_batches(BATCHES), **EXACT))
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "eva-fit.rank0-of1.step00000005.safetensors",
        "eva-fit.rank0-of1.step00000010.safetensors",
    ]


@pytest.fixture
def interrupted(tmp_path) -> Path:
    with pytest.raises(FitInterruptedError):
        fit(tiny_model(0), breaking(token_batches(BATCHES), 5), checkpoint_dir=tmp_path, checkpoint_every=2, **EXACT)
    return tmp_path


def test_checkpoint_of_another_config_is_refused(interrupted) -> None:
    with pytest.raises(CheckpointMismatchError) as info:
        fit(tiny_model(0), token_batches(BATCHES), resume_from=interrupted, **{**EXACT, "rank": 2, "tau": 0.5})
    message = str(info.value)
    assert "different config (rank=4 there but 2 now, tau=0.0 there but 0.5 now)" in message
    assert "eva-fit.rank0-of1.step00000004.safetensors" in message
    assert isinstance(info.value, ValueError)


def _as_written_by_0_1_0(folder: Path) -> None:
    """Drop ``target_error`` from every checkpoint's config, as eva-core 0.1.0 wrote them."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata())
        meta = json.loads(metadata["eva"])
        del meta["config"]["target_error"]
        save_file(load_file(str(path)), str(path), metadata={**metadata, "eva": json.dumps(meta)})


def test_a_checkpoint_from_before_target_error_resumes(interrupted) -> None:
    """A field an older eva-core did not write counts as its default: the old fit resumes as before, and a
    fit that sets the field otherwise is refused, naming it."""
    _as_written_by_0_1_0(interrupted)
    resumed = fit(tiny_model(0), token_batches(BATCHES), resume_from=interrupted, **EXACT)
    assert_same_state(resumed, fit(tiny_model(0), token_batches(BATCHES), **EXACT))
    with pytest.raises(CheckpointMismatchError, match=r"target_error=0\.3 there but 0\.1 now"):
        fit(
            tiny_model(0),
            token_batches(BATCHES),
            resume_from=interrupted,
            **{**EXACT, "tau": None, "target_error": 0.1},
        )


def test_a_default_budget_resumes_whatever_the_free_memory_is_now(tmp_path, monkeypatch) -> None:
    """gram_memory_bytes=None: the fit measures with the kinds its checkpoint holds even when the free memory
    (hence the budget) changed so that a fresh choice would differ (here: every input would be sketched)."""
    import eva_core.fitting.costs as costs

    with pytest.raises(FitInterruptedError):
        fit(tiny_model(0), breaking(token_batches(BATCHES), 5), checkpoint_dir=tmp_path, checkpoint_every=2, **EXACT)
    monkeypatch.setattr(costs, "free_memory", lambda device: 0)
    resumed = fit(tiny_model(0), token_batches(BATCHES), resume_from=tmp_path, **EXACT)
    monkeypatch.undo()
    assert_same_state(resumed, fit(tiny_model(0), token_batches(BATCHES), **EXACT))


def _as_written_before_statistics(folder: Path) -> None:
    """A checkpoint as eva-core wrote it before ``statistics``: no such field, the old default budget, and no
    record of the kinds (only the statistics' classes)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata())
        meta = json.loads(metadata["eva"])
        del meta["config"]["statistics"], meta["kinds"]
        meta["config"]["gram_memory_bytes"] = 4 * 1024**3
        save_file(load_file(str(path)), str(path), metadata={**metadata, "eva": json.dumps(meta)})


def test_a_checkpoint_from_before_the_statistics_setting_resumes(tmp_path) -> None:
    """Its kinds are kept (read from the statistics' classes); an explicit other budget is still refused."""
    settings = {**EXACT, "statistics": "exact", "gram_memory_bytes": 4 * 1024**3}
    with pytest.raises(FitInterruptedError):
        fit(tiny_model(0), breaking(token_batches(BATCHES), 5), checkpoint_dir=tmp_path, checkpoint_every=2, **settings)
    _as_written_before_statistics(tmp_path)
    resumed = fit(tiny_model(0), token_batches(BATCHES), resume_from=tmp_path, **EXACT)
    assert_same_state(resumed, fit(tiny_model(0), token_batches(BATCHES), **EXACT))
    with pytest.raises(CheckpointMismatchError, match=r"gram_memory_bytes=4294967296 there but 0 now"):
        fit(tiny_model(0), token_batches(BATCHES), resume_from=tmp_path, **{**EXACT, "gram_memory_bytes": 0})


def test_checkpoint_of_another_model_is_refused(interrupted) -> None:
    other = tiny_model(0)
    other.blocks[1].up, other.blocks[1].down = nn.Linear(WIDTH, 48), nn.Linear(48, WIDTH)
    with pytest.raises(
        CheckpointMismatchError, match=r"different model: its targeted layers differ \(blocks\.1\.down: "
    ):
        fit(other, token_batches(BATCHES), resume_from=interrupted, **EXACT)


def test_resume_with_fewer_batches_is_refused(interrupted) -> None:
    with pytest.raises(CheckpointMismatchError, match="the batches ran out after 2 but the checkpoint had consumed 4"):
        fit(tiny_model(0), token_batches(2), resume_from=interrupted, **EXACT)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"checkpoint_every": 5}, r"fit\(checkpoint_every=5\) needs checkpoint_dir"),
        ({"checkpoint_dir": ".", "checkpoint_every": 0}, r"checkpoint_every=0\) is invalid: expected an integer >= 1"),
        ({"resume": True}, r"fit\(resume=True\) needs checkpoint_dir"),
        ({"resume": "yes"}, r"fit\(resume='yes'\) is invalid"),
        ({"resume_from": "/nonexistent/eva"}, r"resume_from='/nonexistent/eva'\): no such folder"),
    ],
)
def test_checkpoint_arguments_are_validated(arguments, message) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        fit(tiny_model(0), token_batches(1), **arguments, **EXACT)


@pytest.mark.parametrize(("rank", "rho"), [(2, 3.0), (3, 2.0), (8, 1.0), (2, 1.0)])
def test_reallocated_state_equals_a_fresh_fit(tmp_path, rank, rho) -> None:
    """A state fitted with rank=4, rho=2 (8 components kept), saved, loaded and re-budgeted offline gives
    the same ranks and the same LoRA A rows as a fresh fit with the new rank and rho on the same data."""
    fitted = fit(tiny_model(0), token_batches(BATCHES), **EXACT)
    offline = EvaState.load(fitted.save(tmp_path)).reallocate(rank=rank, rho=rho)
    fresh = fit(tiny_model(0), token_batches(BATCHES), **{**EXACT, "rank": rank, "rho": rho})
    assert offline.ranks == fresh.ranks
    assert (offline.config.rank, offline.config.rho) == (rank, rho)
    for name in fresh.layers:
        torch.testing.assert_close(offline.components(name), fresh.components(name), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            offline.components(name, whiten=True), fresh.components(name, whiten=True), rtol=1e-4, atol=1e-4
        )


if __name__ == "__main__":  # the fit the kill test interrupts
    torch.set_num_threads(1)
    os.environ["EVA_DISABLE_PLUGINS"] = "*"
    folder, stall_marker = Path(sys.argv[1]), Path(sys.argv[2])
    fit(
        tiny_model(0),
        Stalling(token_batches(BATCHES), 7, stall_marker),
        checkpoint_dir=folder,
        checkpoint_every=3,
        **EXACT,
    )
