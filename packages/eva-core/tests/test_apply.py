"""apply(): the peft model it builds, its scaling patterns, and a plain-peft save/load round trip."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, PeftModel
from torch import nn

from eva_core import EvaConfig, EvaState, LayerSpectrum, apply, fit, init, lora_config_for
from eva_core.errors import InvalidConfigError


@pytest.fixture
def state(model, batches, exact_fit_settings) -> EvaState:
    return fit(model, batches, **exact_fit_settings)


def lora_layers(peft_model: PeftModel) -> dict[str, nn.Module]:
    prefix = "base_model.model."
    return {name.removeprefix(prefix): m for name, m in peft_model.named_modules() if hasattr(m, "lora_A")}


def test_lora_a_holds_the_components_and_b_is_zero(model, state) -> None:
    assert len(set(state.ranks.values())) > 1  # the allocation is not uniform: patterns are exercised
    peft_model = apply(model, state)
    layers = lora_layers(peft_model)
    assert set(layers) == set(state.ranks)
    for name, layer in layers.items():
        weight_a = layer.lora_A["default"].weight
        assert weight_a.shape == (state.ranks[name], 16 if not name.endswith("down") else 32)
        assert torch.equal(weight_a, state.components(name))
        assert torch.equal(layer.lora_B["default"].weight, torch.zeros_like(layer.lora_B["default"].weight))


def test_whitened_rows_are_divided_by_their_std(model, batches, exact_fit_settings) -> None:
    state = fit(model, batches, whiten=True, **exact_fit_settings)
    peft_model = apply(model, state)
    for name, layer in lora_layers(peft_model).items():
        spectrum, rank = state.layers[name], state.ranks[name]
        expected = spectrum.components[:rank] / spectrum.explained_variance[:rank].sqrt()[:, None]
        torch.testing.assert_close(layer.lora_A["default"].weight, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("r", "alpha", "rslora"), [(None, None, False), (8, 32, False), (4, 8, True), (16, 4, True)])
def test_scaling_matches_the_configured_one(model, state, r, alpha, rslora) -> None:
    """Every layer keeps the scaling the LoraConfig asks for: alpha_l / r_l == alpha / r, or
    alpha_l / sqrt(r_l) == alpha / sqrt(r) under rsLoRA; the default is scaling 1."""
    base = None if r is None else LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora)
    expected = 1.0 if r is None else (alpha / math.sqrt(r) if rslora else alpha / r)
    norm = math.sqrt if rslora else float
    config = lora_config_for(state, base)
    rank = state.config.rank
    assert config.r == rank
    assert config.lora_alpha / norm(rank) == pytest.approx(expected, rel=1e-12)
    patterned = {key.replace("\\", "").lstrip("^"): key for key in config.rank_pattern}
    assert set(patterned) == {name for name, r_l in state.ranks.items() if r_l != rank}
    assert set(config.alpha_pattern) == set(config.rank_pattern)
    for name, key in patterned.items():
        assert config.rank_pattern[key] == state.ranks[name]
        assert config.alpha_pattern[key] / norm(state.ranks[name]) == pytest.approx(expected, rel=1e-12), name
    peft_model = apply(model, state, base)
    for name, layer in lora_layers(peft_model).items():
        assert layer.r["default"] == state.ranks[name]
        assert layer.scaling["default"] == pytest.approx(expected, rel=1e-12), name


def test_rslora_keeps_alpha_over_sqrt_r(state) -> None:
    config = lora_config_for(state, LoraConfig(r=16, lora_alpha=32, use_rslora=True))
    for key, alpha_l in config.alpha_pattern.items():
        r_l = config.rank_pattern[key]
        assert alpha_l / math.sqrt(r_l) == pytest.approx(32 / math.sqrt(16), rel=1e-12)
    assert config.lora_alpha / math.sqrt(config.r) == pytest.approx(32 / math.sqrt(16), rel=1e-12)


def test_rank_zero_layers_get_no_adapter(model, state) -> None:
    ranks = dict(state.ranks)
    ranks["blocks.1.o"], ranks["head"] = 0, ranks["head"] + ranks["blocks.1.o"]
    if ranks["head"] > state.layers["head"].components.shape[0]:
        ranks["blocks.0.up"], ranks["head"] = ranks["blocks.0.up"] + 1, ranks["head"] - 1
    zeroed = EvaState(layers=state.layers, ranks=ranks, steps=state.steps, config=state.config)
    peft_model = apply(model, zeroed)
    layers = lora_layers(peft_model)
    assert "blocks.1.o" not in layers
    assert isinstance(peft_model.get_base_model().blocks[1].o, nn.Linear)
    assert set(layers) == {name for name, r in ranks.items() if r > 0}
    assert torch.equal(layers["head"].lora_A["default"].weight, zeroed.components("head"))


def test_all_ranks_zero_is_an_error(state) -> None:
    empty = EvaState(layers=state.layers, ranks=dict.fromkeys(state.ranks, 0), steps=1, config=state.config)
    with pytest.raises(InvalidConfigError, match="every layer of the EvaState has rank 0"):
        lora_config_for(empty)


def test_output_at_step_zero_equals_base(model, batches, state) -> None:
    model.eval()  # the blocks hold dropout
    inputs = {k: v for k, v in batches[0].items() if k != "labels"}
    with torch.no_grad():
        expected = model(**inputs)
        got = apply(model, state)(**inputs)
    assert torch.equal(got, expected)


def test_save_pretrained_loads_with_plain_peft(make_model, state, batches, tmp_path) -> None:
    inputs = {k: v for k, v in batches[1].items() if k != "labels"}
    peft_model = apply(make_model(0).eval(), state, LoraConfig(r=8, lora_alpha=16))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in lora_layers(peft_model).values():  # as if trained: make the adapters matter
            weight = layer.lora_B["default"].weight
            weight.copy_(torch.randn(weight.shape, generator=generator))
        expected = peft_model(**inputs)
        assert not torch.equal(expected, make_model(0).eval()(**inputs))
    peft_model.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(make_model(0).eval(), tmp_path)
    with torch.no_grad():
        got = loaded(**inputs)
    assert torch.equal(got, expected)
    for name, layer in lora_layers(loaded).items():
        assert torch.equal(layer.lora_A["default"].weight, state.components(name))
        assert layer.r["default"] == state.ranks[name]


def test_apply_rejects_a_peft_model_and_a_foreign_state(model, state) -> None:
    peft_model = apply(model, state)
    with pytest.raises(InvalidConfigError, match="already has an adapter of that name"):
        apply(peft_model, state)
    with pytest.raises(InvalidConfigError, match=r"must be a peft\.LoraConfig"):
        lora_config_for(state, {"r": 4})  # type: ignore[arg-type]


def test_init_fits_and_applies(make_model, batches, exact_fit_settings) -> None:
    peft_model = init(make_model(0), batches, **exact_fit_settings)
    state = peft_model.eva_state
    assert state.steps == 6
    for name, layer in lora_layers(peft_model).items():
        assert torch.equal(layer.lora_A["default"].weight, state.components(name))


def test_layer_name_that_is_a_suffix_of_another() -> None:
    """Layers "0" and "1.0" (a nested Sequential): each must get its own rank, although peft matches
    rank_pattern keys as name suffixes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Sequential(nn.Linear(8, 8)))
    values = torch.linspace(1.0, 0.1, 6)

    def spectrum(name: str) -> LayerSpectrum:
        return LayerSpectrum(torch.eye(6, 8), values.sqrt(), values, values / 10, 100, True, 2, name)

    state = EvaState(
        layers={"0": spectrum("0"), "1.0": spectrum("1.0")},
        ranks={"0": 2, "1.0": 6},
        steps=2,
        config=EvaConfig(rank=4, rho=1.5),
    )
    layers = lora_layers(apply(model, state))
    assert {name: layer.r["default"] for name, layer in layers.items()} == {"0": 2, "1.0": 6}
