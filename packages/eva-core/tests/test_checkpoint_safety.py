"""Checkpoints that never lose or mix what the user had (issue 13): a fresh fit refuses a folder holding
checkpoints, a resume refuses a model with other weights, skips a truncated latest checkpoint for the older
one kept, names every unreadable file, and loads onto the device the fit uses now."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import tiny_model, token_batches
from safetensors import safe_open
from safetensors.torch import save_file

from eva_core import EvaState, EvaWarning, fit
from eva_core.errors import CheckpointMismatchError, InvalidConfigError, StateFileError
from eva_core.fitting import checkpoint

BATCHES = 12
EXACT = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": BATCHES, "max_steps": BATCHES, "progress": False}
NAME = "eva-fit.rank0-of1.step{:08d}.safetensors"


class Interrupted(Exception):  # noqa: N818 - not an error, a stop
    pass


class Recording:
    """Yields ``batches`` (raising ``Interrupted`` before batch ``stop``), recording each one taken."""

    def __init__(self, batches: list[dict], stop: int | None = None) -> None:
        self.batches, self.stop, self.taken = batches, stop, 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(self.batches):
            if i == self.stop:
                raise Interrupted
            self.taken += 1
            yield batch


def interrupt(folder: Path, model_seed: int = 0) -> None:
    """A fit checkpointing every 2 batches, interrupted before its 6th batch: steps 2 and 4 are kept."""
    with pytest.raises(Interrupted):
        fit(tiny_model(model_seed), Recording(token_batches(BATCHES), 5), checkpoint_dir=folder, checkpoint_every=2,
            **EXACT)  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == [NAME.format(2), NAME.format(4)]


def assert_same_state(state: EvaState, reference: EvaState) -> None:
    assert (state.steps, state.ranks) == (reference.steps, reference.ranks)
    assert state.extra["history"] == reference.extra["history"]
    for name, ref in reference.layers.items():
        torch.testing.assert_close(state.layers[name].components, ref.components, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def reference() -> EvaState:
    return fit(tiny_model(0), token_batches(BATCHES), **EXACT)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# 4. a fresh fit never deletes checkpoints -----------------------------------------------------------------
def test_a_fresh_fit_refuses_a_folder_holding_checkpoints_before_any_work(tmp_path: Path) -> None:
    interrupt(tmp_path)
    before = snapshot(tmp_path)
    batches = Recording(token_batches(BATCHES))
    with pytest.raises(InvalidConfigError) as info:
        fit(tiny_model(0), batches, checkpoint_dir=tmp_path, checkpoint_every=3, **EXACT)
    message = str(info.value)
    assert f"fit(checkpoint_dir={str(tmp_path)!r}) already holds 2 checkpoint(s)" in message
    for fix in ("resume=True", "another checkpoint_dir", "remove them yourself"):
        assert fix in message
    assert batches.taken == 0  # refused up front
    assert snapshot(tmp_path) == before


def test_a_fit_resuming_elsewhere_refuses_a_checkpoint_dir_holding_checkpoints(tmp_path: Path) -> None:
    interrupt(tmp_path / "a")
    interrupt(tmp_path / "b")
    before = snapshot(tmp_path / "b")
    with pytest.raises(InvalidConfigError, match="already holds 2 checkpoint"):
        fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path / "b", resume_from=tmp_path / "a", **EXACT)
    assert snapshot(tmp_path / "b") == before


def test_files_not_ours_are_left_alone(tmp_path: Path, reference: EvaState) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "eva-fit.rank0-of1.step1.safetensors.bak").write_text("mine too")
    state = fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path, checkpoint_every=4, **EXACT)
    assert_same_state(state, reference)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.txt", "eva-fit.rank0-of1.step1.safetensors.bak", NAME.format(4), NAME.format(8)]
    )


# 5. a model with other weights is refused --------------------------------------------------------------
def test_resuming_with_other_weights_is_refused(tmp_path: Path) -> None:
    interrupt(tmp_path)
    with pytest.raises(CheckpointMismatchError) as info:
        fit(tiny_model(1), token_batches(BATCHES), checkpoint_dir=tmp_path, resume=True, **EXACT)
    message = str(info.value)
    assert "was written for a model with other weights" in message and NAME.format(4) in message
    assert "resume with the same model and weights" in message


def test_one_changed_weight_entry_among_the_probed_ones_is_noticed(tmp_path: Path) -> None:
    interrupt(tmp_path)
    model = tiny_model(0)
    with torch.no_grad():
        model.blocks[1].up.weight[0, 0] += 1e-3  # the first entry is always probed
    with pytest.raises(
        CheckpointMismatchError, match=r"other weights: the weights of 1 targeted layer\(s\) differ \(blocks\.1\.up\)"
    ):
        fit(model, token_batches(BATCHES), checkpoint_dir=tmp_path, resume=True, **EXACT)


def test_checkpoints_without_a_fingerprint_still_resume(tmp_path: Path, reference: EvaState) -> None:
    interrupt(tmp_path)
    for path in tmp_path.iterdir():  # as the previous eva-core wrote them: [type, d_in] per layer
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()["eva"])
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        meta["layers"] = {name: value[:2] for name, value in meta["layers"].items()}
        save_file(tensors, str(path), metadata={"eva": json.dumps(meta)})
    state = fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path, resume=True, **EXACT)
    assert_same_state(state, reference)


# 6. corrupt checkpoints ----------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_latest_checkpoint_falls_back_to_the_older_one(tmp_path: Path, reference: EvaState) -> None:
    interrupt(tmp_path)
    truncate(tmp_path / NAME.format(4))
    batches = Recording(token_batches(BATCHES))
    with pytest.warns(EvaWarning, match=rf"skipping unreadable checkpoint\(s\) .*{NAME.format(4)}.*older step 2"):
        state = fit(tiny_model(0), batches, checkpoint_dir=tmp_path, resume=True, **EXACT)
    assert_same_state(state, reference)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_no_readable_checkpoint_names_them_all(tmp_path: Path, how: str) -> None:
    interrupt(tmp_path)
    for step in (2, 4):
        path = tmp_path / NAME.format(step)
        truncate(path) if how == "truncated" else path.write_bytes(b"" if how == "empty" else b"\x07" * 64)
    with pytest.raises(StateFileError) as info:
        fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path, resume=True, **EXACT)
    assert NAME.format(2) in str(info.value) and NAME.format(4) in str(info.value)


def test_a_checkpoint_with_incomplete_metadata_names_the_file(tmp_path: Path) -> None:
    interrupt(tmp_path)
    path = tmp_path / NAME.format(4)
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["eva"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    del meta["statistics"]
    save_file(tensors, str(path), metadata={"eva": json.dumps(meta)})
    with pytest.raises(StateFileError, match=rf"{NAME.format(4)} is corrupt or truncated .*'statistics'"):
        fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path, resume=True, **EXACT)


# 7. resume on the device the fit uses now ---------------------------------------------------------------
def test_a_checkpoint_written_on_another_device_resumes_here(
    tmp_path: Path, reference: EvaState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint says its statistics lived on cuda:3 (as one written on a GPU machine does); the
    resumed fit, on the CPU, loads them onto the CPU instead of asking for cuda:3."""
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "_device_of", lambda stats: torch.device("cuda:3"))
        interrupt(tmp_path)
    with safe_open(str(tmp_path / NAME.format(4)), framework="pt") as handle:
        written = json.loads(handle.metadata()["eva"])["statistics"]
    assert {info["device"] for info in written.values()} == {"cuda:3"}
    state = fit(tiny_model(0), token_batches(BATCHES), checkpoint_dir=tmp_path, resume=True, **EXACT)
    assert_same_state(state, reference)
    assert all(layer.components.device.type == "cpu" for layer in state.layers.values())


def test_the_checkpoint_writes_are_flushed_before_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    settings = {**EXACT, "max_steps": 4, "min_steps": 4}
    fit(tiny_model(0), token_batches(4), checkpoint_dir=tmp_path, checkpoint_every=2, **settings)
    assert events[:3] == ["fsync", "replace", "fsync"]  # file, rename, folder
