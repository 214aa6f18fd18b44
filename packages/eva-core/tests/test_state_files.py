"""EvaState files: an all-or-nothing save, a load that refuses what no fit produces (naming the file, the
layer and the fix), and reallocation bounded by the components stored (issue 13)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from saved_states import SPECTRUM_FIELDS, assert_identical

from eva_core import EvaConfig, EvaState, LayerSpectrum
from eva_core.errors import EvaError, ReallocationError, StateFileError


def spectrum(k: int, width: int, *, rows: int = 100, source: str = "", seed: int = 0) -> LayerSpectrum:
    """A spectrum as a fit makes it: k orthonormal (k, width) components, descending variances."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(width, width, generator=generator))[0][:, :k].T.contiguous()  # (k, width)
    variance = torch.linspace(2.0, 1.0, k) ** 2 if k else torch.zeros(0)
    return LayerSpectrum(basis, variance.sqrt(), variance, variance / (variance.sum() + 1), rows, True, 3, source)


def make_state(
    rank: int = 2, rho: float = 2.0, widths: tuple[int, ...] = (6, 8, 5), extra: dict | None = None
) -> EvaState:
    config = EvaConfig(rank=rank, rho=rho)
    layers = {f"l{i}": spectrum(config.max_components, w, source=f"l{i}", seed=i) for i, w in enumerate(widths)}
    state = EvaState(layers=layers, ranks={}, steps=4, config=config, seconds=1.5, extra=extra or {"note": "x"})
    return state.reallocate()


# 1. save is all or nothing ---------------------------------------------------------------------------------
def test_a_failing_save_leaves_the_previous_state(tmp_path: Path) -> None:
    """A Path in ``extra`` made the JSON write fail after the new spectra were written: load then mixed
    the new spectra with the old ranks. Now nothing is written and the old state loads as it was."""
    old = make_state(rank=2)
    old.save(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    new = make_state(rank=2, widths=(6, 8, 5))
    new.layers = {
        name: spectrum(4, layer.components.shape[1], seed=9, source=name) for name, layer in new.layers.items()
    }
    new.extra = {"out": tmp_path / "somewhere"}
    with pytest.raises(StateFileError, match=r"state\.extra must hold only .*str\(path\).*Nothing was written"):
        new.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert_identical(EvaState.load(tmp_path), old)


def test_save_replaces_the_previous_state_and_removes_only_its_own_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "spectra.safetensors.bak").write_text("also mine")
    make_state(rank=2).save(tmp_path)
    newer = make_state(rank=1, rho=4.0)
    newer.save(tmp_path)
    meta = json.loads((tmp_path / "eva_state.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["eva_state.json", meta["tensors"], "notes.txt", "spectra.safetensors.bak"]
    )
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert_identical(EvaState.load(tmp_path), newer)


def test_save_refuses_to_overwrite_a_json_that_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "eva_state.json").write_text('{"my": "settings"}')
    with pytest.raises(StateFileError, match=r"is not a state EvaState\.save wrote.*remove that file yourself"):
        make_state().save(tmp_path)
    assert (tmp_path / "eva_state.json").read_text() == '{"my": "settings"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eva_state.json"]


def test_states_of_the_first_format_still_load_and_are_replaced_cleanly(tmp_path: Path) -> None:
    state = make_state()
    tensors = {f"{name}.{key}": getattr(layer, key) for name, layer in state.layers.items() for key in SPECTRUM_FIELDS}
    save_file(tensors, str(tmp_path / "spectra.safetensors"))
    meta = json.loads(json.dumps(_legacy_meta(state)))
    (tmp_path / "eva_state.json").write_text(json.dumps(meta))
    assert_identical(EvaState.load(tmp_path), state)
    state.save(tmp_path)
    assert not (tmp_path / "spectra.safetensors").exists()  # superseded, and ours
    assert_identical(EvaState.load(tmp_path), state)


def _legacy_meta(state: EvaState) -> dict:
    config = {**state.config.__dict__}
    return {
        "format": "eva-state/1",
        "steps": state.steps,
        "seconds": state.seconds,
        "config": config,
        "ranks": state.ranks,
        "layers": {
            name: {"rows": x.rows, "converged": x.converged, "converged_at": x.converged_at, "source": x.source}
            for name, x in state.layers.items()
        },
        "extra": state.extra,
    }


# 2. load refuses what no fit produces ---------------------------------------------------------------------
def _rewrite(folder: Path, edit_meta=None, edit_tensors=None) -> None:  # type: ignore[no-untyped-def]
    """Alter a saved state in place (the checksum updated, as a careless editor would not, to reach the checks)."""
    meta = json.loads((folder / "eva_state.json").read_text())
    spectra = folder / meta.get("tensors", "spectra.safetensors")  # (the first format: a fixed name)
    if edit_tensors is not None:
        tensors = load_file(str(spectra))
        edit_tensors(tensors)
        save_file(tensors, str(spectra))
        meta.pop("sha256", None)
    if edit_meta is not None:
        edit_meta(meta)
    (folder / "eva_state.json").write_text(json.dumps(meta))


def _set(tensors: dict, key: str, value: torch.Tensor) -> None:
    tensors[key] = value


CORRUPTIONS = {
    "nan component": (None, lambda t: t["l1.components"].__setitem__((0, 0), float("nan")), "l1", "NaN or infinity"),
    "inf variance": (None, lambda t: t["l0.explained_variance"].__setitem__(1, float("inf")), "l0", "NaN or infinity"),
    "integer components": (
        None,
        lambda t: _set(t, "l2.components", t["l2.components"].long()),
        "l2",
        "dtype torch.int64",
    ),
    "rank over the cap": (lambda m: m["ranks"].update(l0=5), None, "l0", r"rank 5 outside 0\.\.4"),
    "rank over stored": (
        lambda m: m["ranks"].update(l1=4),
        lambda t: [_set(t, f"l1.{k}", t[f"l1.{k}"][:3]) for k in SPECTRUM_FIELDS],
        "l1",
        r"rank 4 outside 0\.\.3 \(rho cap 4, 3 components stored\)",
    ),
    "negative rank": (lambda m: m["ranks"].update(l2=-1), None, "l2", "rank -1 outside"),
    "over the budget": (
        lambda m: m["ranks"].update(l0=4, l1=4, l2=0),
        None,
        None,
        r"sum to 8, over the budget .* 2 x 3",
    ),
    "rank without layer": (lambda m: m["ranks"].update(ghost=1), None, "ghost", "has a rank but no spectrum"),
    "layer without rank": (lambda m: m["ranks"].pop("l2"), None, "l2", "has a spectrum but no rank entry"),
    "missing tensors": (lambda m: m["layers"]["l1"].update(source="nowhere"), None, "l1", "no nowhere.components"),
    "float rank": (lambda m: m["ranks"].update(l0=1.5), None, None, "expected an integer"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_load_refuses_contents_no_fit_produces(tmp_path: Path, case: str) -> None:
    edit_meta, edit_tensors, layer, detail = CORRUPTIONS[case]
    make_state().save(tmp_path)
    _rewrite(tmp_path, edit_meta, edit_tensors)
    with pytest.raises(StateFileError) as info:
        EvaState.load(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "eva_state.json") in message
    assert layer is None or repr(layer) in message
    assert re.search(detail, message), message
    assert "save the state again" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("target", ["eva_state.json", "spectra"])
@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_corrupt_files_raise_an_eva_error_naming_the_file(tmp_path: Path, target: str, how: str) -> None:
    make_state().save(tmp_path)
    meta = json.loads((tmp_path / "eva_state.json").read_text())
    path = tmp_path / (meta.get("tensors", "spectra.safetensors") if target == "spectra" else target)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00\xff" * 40, "empty": b""}[how])
    with pytest.raises(EvaError, match=str(path)):
        EvaState.load(tmp_path)


@pytest.mark.parametrize(
    "name", [None, 3, "../elsewhere.safetensors", "/etc/passwd", ".eva_state." + "0" * 32 + ".json.tmp"]
)
def test_a_manifest_naming_no_spectra_file_of_ours_is_refused(tmp_path: Path, name: object) -> None:
    """Found by the damage property: ``"tensors": null`` was reported as a missing file ``<folder>/None``;
    a manifest may name only a spectra file save() writes, in its own folder."""
    make_state().save(tmp_path)
    _rewrite(tmp_path, lambda meta: meta.update(tensors=name))
    with pytest.raises(StateFileError, match=rf"{tmp_path / 'eva_state.json'} names no spectra file save\(\) writes"):
        EvaState.load(tmp_path)


def test_spectra_altered_after_the_save_are_refused(tmp_path: Path) -> None:
    make_state().save(tmp_path)
    meta = json.loads((tmp_path / "eva_state.json").read_text())
    tensors = load_file(str(tmp_path / meta["tensors"]))
    tensors["l0.components"] = tensors["l0.components"] * 2
    save_file(tensors, str(tmp_path / meta["tensors"]))
    with pytest.raises(StateFileError, match="checksum differs"):
        EvaState.load(tmp_path)


def test_save_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    state = make_state()
    state.ranks["l0"] = 7
    with pytest.raises(StateFileError, match=r"EvaState\.save\(path=.*layer 'l0': rank 7 outside"):
        state.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_load_onto_a_device_keeps_followers_sharing(tmp_path: Path) -> None:
    state = make_state()
    state.layers["l3"] = LayerSpectrum(**{k: getattr(state.layers["l0"], k) for k in SPECTRUM_FIELDS}, rows=100,
                                       converged=True, converged_at=3, source="l0")  # fmt: skip
    state = state.reallocate()
    loaded = EvaState.load(state.save(tmp_path), device="cpu")
    assert_identical(loaded, state)


# 3. reallocation is bounded by the components stored ---------------------------------------------------
def test_reallocating_down_then_back_up() -> None:
    state = make_state(rank=4, rho=2.0, widths=(12, 16, 10))  # 8 components stored per layer
    down = state.reallocate(rank=2, rho=1.0)
    up = down.reallocate(rank=4, rho=2.0)
    assert up.ranks == state.ranks
    with pytest.raises(ReallocationError) as info:
        down.reallocate(rank=5, rho=2.0)
    message = str(info.value)
    assert "needs up to 10 components per layer but this state stores at most 8 per layer" in message
    assert "round(rho * rank) <= 8" in message


def test_reallocate_is_not_bounded_by_narrow_layers_or_few_rows() -> None:
    """A layer that stores fewer components because its input is narrow (or saw few rows) does not block
    a larger budget: a fresh fit could not give it more either."""
    config = EvaConfig(rank=2, rho=2.0)
    layers = {"wide": spectrum(4, 16, source="wide"), "narrow": spectrum(3, 3, source="narrow"),
              "few": spectrum(2, 16, rows=3, source="few")}  # fmt: skip
    state = EvaState(layers=layers, ranks={}, steps=1, config=config).reallocate()
    assert sum(state.ranks.values()) == 6
    assert state.reallocate(rank=1, rho=4.0).config.max_components == 4
    with pytest.raises(ReallocationError, match="'wide' with 4"):
        state.reallocate(rank=3, rho=2.0)


def test_reallocate_is_not_bounded_by_layers_without_variance() -> None:
    """A fit keeps no component of variance ~0, so a layer whose inputs are constant stores none (and one of
    low input rank stores few). Such a layer kept all it has: it used to block every reallocation, with
    a message contradicting itself ("needs up to 1 components ... stores at most 6 ... 'dead' with 0")."""
    config = EvaConfig(rank=3, rho=2.0)
    layers = {"full": spectrum(6, 16, source="full"), "dead": spectrum(0, 16, source="dead"),
              "low": spectrum(2, 16, source="low")}  # fmt: skip
    state = EvaState(layers=layers, ranks={}, steps=1, config=config).reallocate()
    for rank, rho in ((1, 1.0), (3, 2.0), (2, 3.0)):
        ranks = state.reallocate(rank=rank, rho=rho).ranks
        assert ranks["dead"] == 0 and ranks["low"] <= 2 and sum(ranks.values()) <= rank * 3
    with pytest.raises(ReallocationError, match="'full' with 6"):
        state.reallocate(rank=4, rho=2.0)  # 8 > 6: only the layer cut at the fit's cap falls short
