"""Properties of EvaState files over generated states (issue 13, "tests that hunt"): any state a fit can
make round-trips exactly (layer counts, widths, ranks, shared inputs, component dtypes, extra values);
reallocation respects the budget and every layer's cap, or says which layer falls short; and any damage to
the files (truncation, flipped bytes, edited JSON) either loads a valid state or raises an EvaError that
names the file."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from saved_states import SPECTRUM_FIELDS, assert_identical

from eva_core import EvaConfig, EvaState, LayerSpectrum
from eva_core.errors import EvaError, ReallocationError
from eva_core.ranks import allocate_layer_ranks

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def spectrum(draw: st.DrawFn, width: int, cap: int, dtype: torch.dtype, source: str) -> LayerSpectrum:
    k = draw(st.integers(0, min(width, cap)))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    variance = (torch.rand(k, generator=generator, dtype=torch.float64) * 10).sort(descending=True).values
    at = draw(st.none() | st.integers(1, 50))
    return LayerSpectrum(
        components=torch.randn(k, width, generator=generator).to(dtype),
        singular_values=variance.sqrt().to(dtype),
        explained_variance=variance.to(dtype),
        explained_variance_ratio=(variance / (variance.sum() + 1)).to(dtype),
        rows=draw(st.integers(0, 500)),
        converged=at is not None,
        converged_at=at,
        source=source,
    )


@st.composite
def states(draw: st.DrawFn) -> EvaState:
    """A state as a fit makes it: ranks allocated from the spectra; some layers share an earlier input."""
    config = EvaConfig(rank=draw(st.integers(1, 4)), rho=draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])))
    dtype = draw(st.sampled_from(DTYPES))
    layers: dict[str, LayerSpectrum] = {}
    for i in range(draw(st.integers(1, 5))):
        name = f"blocks.{i}.{draw(st.sampled_from(['q', 'up', 'proj']))}"
        leaders = [n for n, layer in layers.items() if layer.source == n]
        if leaders and draw(st.booleans()):
            leader = layers[draw(st.sampled_from(leaders))]
            layers[name] = LayerSpectrum(**{key: getattr(leader, key) for key in SPECTRUM_FIELDS}, rows=leader.rows,
                                         converged=leader.converged, converged_at=leader.converged_at,
                                         source=leader.source)  # fmt: skip
        else:
            layers[name] = spectrum(draw, draw(st.integers(1, 12)), config.max_components, dtype, name)
    return EvaState(
        layers=layers,
        ranks=allocate_layer_ranks(layers, config),
        steps=draw(st.integers(0, 10**6)),
        config=config,
        seconds=draw(st.floats(0, 1e6)),
        extra=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=4)),
    )


@settings(max_examples=50)
@given(state=states())
def test_every_state_round_trips_exactly(state: EvaState) -> None:
    with tempfile.TemporaryDirectory() as folder:
        loaded = EvaState.load(state.save(folder))
        assert_identical(loaded, state)
        state.save(folder)  # saved again over itself: still exactly the same
        assert_identical(EvaState.load(folder), state)
        assert sorted(p.name for p in Path(folder).iterdir())[0] == "eva_state.json"
        assert len(list(Path(folder).iterdir())) == 2


@settings(max_examples=150)
@given(
    state=states(),
    rank=st.integers(1, 6),
    rho=st.sampled_from([1.0, 1.25, 1.5, 2.0, 3.0, 4.0]),
    metric=st.sampled_from(["explained_variance_ratio", "explained_variance", "uniform"]),
)
def test_reallocate_respects_the_budget_and_the_caps(state: EvaState, rank: int, rho: float, metric: str) -> None:
    cap = max(rank, round(rho * rank))
    fitted = max(layer.components.shape[0] for layer in state.layers.values())  # the fit's cap, as far as known
    short = [  # cut at the fit's cap, though a fit with the new cap could keep more (a layer storing fewer kept all)
        name
        for name, layer in state.layers.items()
        if fitted == layer.components.shape[0] < min(cap, layer.components.shape[1], max(layer.rows - 1, 0))
    ]
    try:
        new = state.reallocate(rank=rank, rho=rho, redistribution=metric)
    except ReallocationError as error:
        assert short and f"needs up to {cap} components per layer" in str(error)
        assert repr(short[0]) in str(error)
        return
    assert not short
    limits = {name: min(cap, layer.components.shape[0]) for name, layer in state.layers.items()}
    assert all(0 <= new.ranks[name] <= limits[name] for name in state.layers)
    budget = rank * len(state.layers)
    assert sum(new.ranks.values()) == min(budget, sum(limits.values()))
    assert new.layers == state.layers and state.ranks == allocate_layer_ranks(state.layers, state.config)
    with tempfile.TemporaryDirectory() as folder:
        assert_identical(EvaState.load(new.save(folder)), new)


def _replace_somewhere(meta: Any, path: list[Any], value: Any) -> Any:
    if not path:
        return value
    key, rest = path[0], path[1:]
    if isinstance(meta, dict) and key in meta:
        return {**meta, key: _replace_somewhere(meta[key], rest, value)}
    return value


def _json_paths(meta: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(meta, dict):
        for key, value in meta.items():
            found += _json_paths(value, (*prefix, key))
    return found


@settings(max_examples=150)
@given(state=states(), data=st.data())
def test_damaged_files_load_a_valid_state_or_raise_an_eva_error_naming_the_file(
    state: EvaState, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = state.save(name)
        manifest = folder / "eva_state.json"
        spectra = folder / json.loads(manifest.read_text())["tensors"]
        target = data.draw(st.sampled_from([manifest, spectra]))
        raw = target.read_bytes()
        damage = data.draw(st.sampled_from(["truncate", "flip", "edit"]))
        if damage == "truncate":
            target.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
        elif damage == "flip":
            at = data.draw(st.integers(0, len(raw) - 1))
            target.write_bytes(raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :])
        else:
            meta = json.loads(manifest.read_text())
            paths = _json_paths(meta)
            telling = [p for p in paths if p[:1] in (("ranks",), ("layers",), ("config",)) and len(p) > 1]
            where = data.draw(
                st.sampled_from(telling) if telling and data.draw(st.booleans()) else st.sampled_from(paths)
            )
            value = data.draw(
                st.integers(-3, 20) | json_values | st.sampled_from([math.nan, math.inf, -1, 10**30, 2.5, True, "x"])
            )
            manifest.write_text(json.dumps(_replace_somewhere(meta, list(where), value)))
        try:
            loaded = EvaState.load(folder)
        except EvaError as error:
            assert str(manifest) in str(error) or str(spectra) in str(error), str(error)
            return
        for name_, layer in loaded.layers.items():  # what loads is a state a fit could make
            assert loaded.ranks[name_] <= min(loaded.config.max_components, layer.components.shape[0])
            assert bool(torch.isfinite(layer.components).all()) and layer.components.is_floating_point()
        assert sum(loaded.ranks.values()) <= loaded.config.rank * len(loaded.layers)
        assert set(loaded.ranks) == set(loaded.layers)
