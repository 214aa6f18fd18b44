"""Options peft's own EVA has: measuring a model that already carries adapters and adding a second,
EVA-initialized one; keeping or dropping the constant-scaling adjustment; a warning when apply overrides an
explicit ``init_lora_weights``."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, inject_adapter_in_model
from test_transactions import STAGES, InjectedError, assert_unchanged, snapshot

from eva_core import EvaState, EvaWarning, apply, fit, init, lora_config_for
from eva_core.errors import InvalidConfigError

FIRST = LoraConfig(r=2, lora_alpha=2, target_modules=["q", "v", "up"], modules_to_save=["head"])


def carrying(make_model) -> PeftModel:  # type: ignore[no-untyped-def]
    """A PeftModel of the tiny model with a trained-looking first adapter (B != 0), so an enabled adapter
    would change the inputs of the layers after it."""
    peft_model = get_peft_model(make_model(0), FIRST)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return peft_model


def lora_layer(peft_model: PeftModel, name: str) -> torch.nn.Module:
    return peft_model.get_base_model().get_submodule(name)


@pytest.mark.parametrize("carrier", ["PeftModel", "injected"])
def test_a_model_with_adapters_is_measured_as_the_plain_model(make_model, batches, exact_fit_settings, carrier) -> None:
    """As peft's get_eva_state_dict on a PeftModel: adapters disabled, the layers under their plain names."""
    plain = fit(make_model(0), batches, **exact_fit_settings)
    model = carrying(make_model) if carrier == "PeftModel" else inject_adapter_in_model(FIRST, make_model(0))
    before = snapshot(model)
    state = fit(model, batches, **exact_fit_settings)
    assert_unchanged(model, before)  # the wrappers are back, the adapters as they were
    assert state.ranks == plain.ranks
    for name in plain.ranks:
        torch.testing.assert_close(state.components(name), plain.components(name), rtol=0, atol=1e-6)


BLOCKS = ["q", "k", "v", "o", "up", "down"]  # every linear layer but the head, which the first adapter saves whole


def test_apply_adds_a_second_eva_adapter_beside_the_first(make_model, batches, exact_fit_settings) -> None:
    peft_model = carrying(make_model)
    first = {name: p.detach().clone() for name, p in peft_model.named_parameters() if ".default" in name}
    state = fit(peft_model, batches, target_modules=BLOCKS, **exact_fit_settings)
    result = apply(peft_model, state, adapter_name="eva")
    assert result is peft_model and result.eva_state is state
    assert sorted(result.peft_config) == ["default", "eva"]
    assert result.active_adapters == ["default"]  # as peft's add_adapter: the new one is not activated
    for name, value in first.items():
        assert torch.equal(dict(result.named_parameters())[name], value), name
    for name, rank in state.ranks.items():
        layer = lora_layer(result, name)
        assert torch.equal(layer.lora_A["eva"].weight, state.components(name)), name
        assert not layer.lora_B["eva"].weight.any()
        assert layer.r["eva"] == rank
    inputs = {k: v for k, v in batches[0].items() if k != "labels"}
    result.eval()
    with torch.no_grad(), result.disable_adapter():
        base = result(**inputs)
    result.set_adapter("eva")
    with torch.no_grad():
        assert torch.equal(result(**inputs), base)  # B = 0: the new adapter starts at the base model


def test_init_adds_a_second_adapter(make_model, batches, exact_fit_settings) -> None:
    peft_model = carrying(make_model)
    result = init(peft_model, batches, adapter_name="eva", target_modules=BLOCKS, **exact_fit_settings)
    assert result is peft_model and sorted(result.peft_config) == ["default", "eva"]
    state = result.eva_state
    assert torch.equal(lora_layer(result, "blocks.1.o").lora_A["eva"].weight, state.components("blocks.1.o"))


def test_an_adapter_of_the_same_name_is_refused(make_model, batches, exact_fit_settings) -> None:
    peft_model = carrying(make_model)
    state = fit(peft_model, batches, **exact_fit_settings)
    before = snapshot(peft_model)
    with pytest.raises(InvalidConfigError, match=r"adapter_name='default'.*already has an adapter of that name"):
        apply(peft_model, state)
    assert_unchanged(peft_model, before)


def test_a_layer_the_first_adapter_saves_whole_is_refused(make_model, batches, exact_fit_settings) -> None:
    peft_model = carrying(make_model)
    state = fit(peft_model, batches, **exact_fit_settings)  # every linear layer, the head included
    before = snapshot(peft_model)
    with pytest.raises(InvalidConfigError, match=r"layer 'head' of the state is a ModulesToSaveWrapper"):
        apply(peft_model, state, adapter_name="eva")
    assert_unchanged(peft_model, before)


def test_lora_layers_outside_a_peft_model_are_refused(make_model, batches, exact_fit_settings) -> None:
    """Layers injected with inject_adapter_in_model: apply cannot return a PeftModel holding them."""
    model = inject_adapter_in_model(FIRST, make_model(0))
    state = fit(model, batches, **exact_fit_settings)
    before = snapshot(model)
    with pytest.raises(InvalidConfigError, match=r"already carries peft layers \(e.g. 'blocks.0.q'.*not a PeftModel"):
        apply(model, state, adapter_name="eva")
    assert_unchanged(model, before)


# ------------------------------------------------------------------------------ adjust_scaling_factors


@pytest.fixture
def state(make_model, batches, exact_fit_settings) -> EvaState:
    return fit(make_model(0), batches, **exact_fit_settings)


def test_adjust_scaling_factors_defaults_to_peft_s(state) -> None:
    from peft import EvaConfig as PeftEvaConfig

    assert state.config.adjust_scaling_factors is PeftEvaConfig().adjust_scaling_factors is True


@pytest.mark.parametrize("adjust", [True, False])
def test_adjust_scaling_factors_as_peft_means_it(make_model, state, adjust) -> None:
    """peft's _load_eva_state_dict: alpha_l = alpha * r_l / r when adjusting (constant scaling alpha / r),
    alpha_l = alpha otherwise (scaling alpha / r_l)."""
    assert len(set(state.ranks.values())) > 1
    changed = EvaState(state.layers, state.ranks, state.steps, state.config.replace(adjust_scaling_factors=adjust))
    peft_model = apply(make_model(0), changed, LoraConfig(r=4, lora_alpha=8))
    for name, rank in state.ranks.items():
        expected = 8 / 4 if adjust else 8 / rank
        assert lora_layer(peft_model, name).scaling["default"] == pytest.approx(expected, rel=1e-12), name
    config = lora_config_for(changed, LoraConfig(r=4, lora_alpha=8))
    assert bool(config.alpha_pattern) is adjust
    assert config.lora_alpha == 8


def test_adjust_scaling_factors_false_under_rslora(make_model, state) -> None:
    changed = EvaState(state.layers, state.ranks, state.steps, state.config.replace(adjust_scaling_factors=False))
    peft_model = apply(make_model(0), changed, LoraConfig(r=4, lora_alpha=8, use_rslora=True))
    for name, rank in state.ranks.items():
        assert lora_layer(peft_model, name).scaling["default"] == pytest.approx(8 / math.sqrt(rank), rel=1e-12)


def test_init_takes_adjust_scaling_factors(make_model, batches, exact_fit_settings) -> None:
    peft_model = init(make_model(0), batches, adjust_scaling_factors=False, **exact_fit_settings)
    assert peft_model.peft_config["default"].alpha_pattern == {}
    assert peft_model.eva_state.config.adjust_scaling_factors is False


# ----------------------------------------------------------------------------------- init_lora_weights


@pytest.mark.parametrize("value", ["gaussian", False, "pissa", "orthogonal"])
def test_overriding_an_explicit_init_lora_weights_warns(make_model, state, value) -> None:
    with pytest.warns(EvaWarning, match=rf"lora_config.init_lora_weights={value!r} is replaced"):
        peft_model = apply(make_model(0), state, LoraConfig(r=4, lora_alpha=4, init_lora_weights=value))
    assert peft_model.peft_config["default"].init_lora_weights is True
    layer = lora_layer(peft_model, "blocks.0.q")
    assert torch.equal(layer.lora_A["default"].weight, state.components("blocks.0.q"))


def test_the_default_init_lora_weights_does_not_warn(make_model, state) -> None:
    apply(make_model(0), state, LoraConfig(r=4, lora_alpha=4))  # filterwarnings=error: any warning fails


@pytest.mark.parametrize("error", [InjectedError, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["third layer", "copy"])
def test_adding_an_adapter_that_fails_leaves_the_peft_model_as_it_was(
    make_model, batches, exact_fit_settings, monkeypatch, where, error
) -> None:
    peft_model = carrying(make_model)
    state = fit(peft_model, batches, target_modules=BLOCKS, **exact_fit_settings)
    before, configs = snapshot(peft_model), dict(peft_model.peft_config)
    _, owner, attribute, fault = next(stage for stage in STAGES if stage[0] == where)
    monkeypatch.setattr(owner, attribute, fault(getattr(owner, attribute), error))
    with pytest.raises(error, match="injected fault"):
        apply(peft_model, state, adapter_name="eva")
    assert_unchanged(peft_model, before)
    assert peft_model.peft_config == configs
    assert peft_model.active_adapters == ["default"]
