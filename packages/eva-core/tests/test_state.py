"""EvaState: save/load round trip (no pickle) and reallocation from the stored spectra."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from eva_core import EvaConfig, EvaState, EvaWarning, LayerSpectrum, fit
from eva_core.errors import InvalidConfigError, ReallocationError

SPECTRUM_FIELDS = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


@pytest.fixture
def fitted(model, batches, exact_fit_settings) -> EvaState:
    return fit(model, batches, **exact_fit_settings)


def test_save_load_round_trip(fitted: EvaState, tmp_path) -> None:
    folder = fitted.save(tmp_path / "state")
    loaded = EvaState.load(folder)
    assert loaded.config == fitted.config
    assert loaded.ranks == fitted.ranks
    assert list(loaded.ranks) == list(fitted.ranks)  # model order kept
    assert loaded.steps == fitted.steps == 6
    assert loaded.seconds == pytest.approx(fitted.seconds)
    assert loaded.extra == fitted.extra and loaded.extra["domain"] == "generic"
    assert [h["step"] for h in loaded.extra["history"]] == list(range(1, fitted.steps + 1))
    assert list(loaded.layers) == list(fitted.layers)
    for name, layer in fitted.layers.items():
        again = loaded.layers[name]
        for key in SPECTRUM_FIELDS:
            assert torch.equal(getattr(again, key), getattr(layer, key)), (name, key)
        assert (again.rows, again.converged, again.converged_at, again.source) == (
            layer.rows,
            layer.converged,
            layer.converged_at,
            layer.source,
        )
    for name in (n for n in fitted.layers if n.startswith("blocks.0.")):
        assert torch.equal(loaded.components(name), fitted.components(name))


def test_followers_share_their_source_after_load(fitted: EvaState, tmp_path) -> None:
    loaded = EvaState.load(fitted.save(tmp_path))
    for follower in ("blocks.0.k", "blocks.0.v", "blocks.1.k", "blocks.1.v"):
        leader = follower.rsplit(".", 1)[0] + ".q"
        assert loaded.layers[follower].source == leader
        assert loaded.layers[follower].components is loaded.layers[leader].components


def test_only_safetensors_and_json_written(fitted: EvaState, tmp_path) -> None:
    folder = fitted.save(tmp_path / "out")
    meta = json.loads((folder / "eva_state.json").read_text())
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["eva_state.json", meta["tensors"]]  # the manifest names the spectra file it belongs to
    assert meta["format"] == "eva-state/2"
    assert meta["config"]["rank"] == 4
    with safe_open(str(folder / meta["tensors"]), framework="pt") as handle:
        keys = set(handle.keys())
    # one copy per measured input: followers (k, v) are not stored again
    assert "blocks.0.q.components" in keys
    assert not any(key.startswith(("blocks.0.k.", "blocks.0.v.")) for key in keys)


def test_round_trip_of_converged_flags_and_regex_targets(model, batches, tmp_path) -> None:
    with pytest.warns(Warning) as record:  # tau=1 never converges
        state = fit(
            model, batches[:3], rank=2, tau=1.0, max_steps=3, target_modules=r"blocks\.1\.(q|up)", progress=False
        )
    assert [w.category.__name__ for w in record] == ["NotConvergedWarning"]
    loaded = EvaState.load(state.save(tmp_path))
    assert loaded.config.target_modules == r"blocks\.1\.(q|up)"
    assert loaded.not_converged == ["blocks.1.q", "blocks.1.up"]
    assert all(layer.converged_at is None for layer in loaded.layers.values())


class Conditional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_round_trip_of_a_layer_that_never_ran(tmp_path) -> None:
    torch.manual_seed(0)
    batches = [torch.randn(32, 8) for _ in range(3)]
    with pytest.warns(EvaWarning) as record:
        state = fit(Conditional(), batches, rank=2, tau=0.0, max_steps=3, progress=False)
    assert "layer 'unused' never ran during the fit; it gets rank 0." in [str(w.message) for w in record]
    assert state.ranks == {"used": 4, "unused": 0}
    loaded = EvaState.load(state.save(tmp_path))
    assert loaded.ranks == state.ranks
    assert loaded.layers["unused"].components.shape == (0, 8)
    assert loaded.layers["unused"].rows == 0


def test_load_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no eva_state\.json there"):
        EvaState.load(tmp_path)
    (tmp_path / "eva_state.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(ValueError, match="format 'other/9'"):
        EvaState.load(tmp_path)


def test_reallocate_budget_and_caps(fitted: EvaState) -> None:
    layers = len(fitted.layers)
    before = dict(fitted.ranks)
    for rank, rho in [(2, 2.0), (4, 1.0), (3, 1.5), (1, 8.0)]:
        state = fitted.reallocate(rank=rank, rho=rho)
        cap = round(rho * rank)
        assert sum(state.ranks.values()) == rank * layers
        assert max(state.ranks.values()) <= cap
        assert (state.config.rank, state.config.rho) == (rank, rho)
        assert state.layers == fitted.layers
        assert state.steps == fitted.steps
    assert fitted.ranks == before  # the original is unchanged
    assert fitted.reallocate().ranks == before  # same settings, same allocation


def test_reallocate_rho_one_gives_every_layer_rank(fitted: EvaState) -> None:
    assert set(fitted.reallocate(rank=3, rho=1.0).ranks.values()) == {3}


@pytest.mark.parametrize(("rank", "rho"), [(2, 2.0), (2, 3.0), (3, 1.0)])
def test_reallocate_equals_a_fresh_fit(model, batches, exact_fit_settings, fitted, rank, rho) -> None:
    fresh = fit(model, batches, **{**exact_fit_settings, "rank": rank, "rho": rho})
    assert fitted.reallocate(rank=rank, rho=rho).ranks == fresh.ranks


def test_reallocate_redistribution_metric(fitted: EvaState) -> None:
    uniform = fitted.reallocate(redistribution="uniform")
    assert set(uniform.ranks.values()) == {4}
    by_variance = fitted.reallocate(redistribution="explained_variance")
    assert by_variance.config.redistribution == "explained_variance"
    assert sum(by_variance.ranks.values()) == 4 * len(fitted.layers)


@pytest.mark.parametrize(("rank", "rho"), [(8, 2.0), (5, 2.0), (4, 2.5), (9, 1.0)])
def test_reallocate_beyond_stored_components(fitted: EvaState, rank: int, rho: float) -> None:
    with pytest.raises(ReallocationError) as info:
        fitted.reallocate(rank=rank, rho=rho)
    message = str(info.value)
    assert f"needs up to {round(rank * rho)} components per layer but this state stores at most 8 per layer" in message
    assert "lower rank or rho" in message
    assert isinstance(info.value, ValueError)


def test_reallocate_invalid_values_are_config_errors(fitted: EvaState) -> None:
    with pytest.raises(InvalidConfigError, match=r"EvaConfig\.rho=0\.5"):
        fitted.reallocate(rho=0.5)


def test_components_and_whitening() -> None:
    components = torch.eye(3, 5)
    layer_values = torch.tensor([4.0, 1.0, 0.25])
    layer = LayerSpectrum(components, layer_values.sqrt(), layer_values, layer_values / 6, 10, True, 2, "x")
    state = EvaState(layers={"x": layer}, ranks={"x": 2}, steps=2, config=EvaConfig(rank=2, rho=1.5))
    assert torch.equal(state.components("x"), components[:2])
    expected = components[:2] / torch.tensor([[2.0], [1.0]])
    assert torch.equal(state.components("x", whiten=True), expected)
    whitened = EvaState(layers={"x": layer}, ranks={"x": 2}, steps=2, config=EvaConfig(rank=2, whiten=True))
    assert torch.equal(whitened.components("x"), expected)
    assert torch.equal(whitened.components("x", whiten=False), components[:2])
