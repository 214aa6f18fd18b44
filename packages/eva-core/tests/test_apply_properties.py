"""apply over generated states and LoraConfigs, valid and not: either a PeftModel whose A rows are the
components, B = 0 and outputs equal the base model's, or an EvaError with the model untouched; and the
outcome is the one the inputs call for (no valid input refused, no invalid one accepted)."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from peft import LoraConfig, PeftModel
from test_transactions import assert_unchanged, snapshot
from torch import nn

from eva_core import EvaConfig, EvaError, EvaState, LayerSpectrum, apply

WIDTHS = {"0": 8, "2": 8, "4.0": 6}  # the input width of each linear layer of model()


def model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 4)))


def mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` nine times in ten, else ``rare``."""
    return st.integers(0, 9).flatmap(lambda i: usual if i else rare)


@st.composite
def layers(draw: st.DrawFn) -> dict[str, Any]:
    """One layer of a state: its name (sometimes one the model lacks), components (sometimes of another
    width, sometimes with a NaN) and rank (sometimes negative or over the components stored)."""
    name = draw(st.sampled_from(list(WIDTHS))) if draw(st.integers(0, 11)) else "9"
    width = WIDTHS.get(name, 8)
    if draw(st.integers(0, 9)) == 0:
        width = draw(st.integers(1, 10))
    stored = draw(st.integers(1, width))
    seed = draw(st.integers(0, 2**16))
    basis, _ = torch.linalg.qr(torch.randn(width, width, generator=torch.Generator().manual_seed(seed)))
    components = basis[:, :stored].T.contiguous()  # (k, d_in) orthonormal rows
    if draw(st.integers(0, 14)) == 0:
        components[0, 0] = float("nan")
    rank = draw(st.integers(0, stored)) if draw(st.integers(0, 15)) else draw(st.sampled_from([-1, stored + 1]))
    with_spectrum = draw(st.integers(0, 19)) > 0
    return {"name": name, "width": width, "components": components, "rank": rank, "spectrum": with_spectrum}


lora_configs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "r": mostly(st.sampled_from([1, 2, 4, 6]), st.sampled_from([0, -1])),
            "lora_alpha": mostly(st.sampled_from([4, 16, 0.5]), st.sampled_from([0, -2])),
            "lora_dropout": mostly(st.sampled_from([0.0, 0.1]), st.sampled_from([1.0, 1.5])),
            "use_rslora": st.booleans(),
            "modules_to_save": mostly(st.none(), st.sampled_from([["4"], ["0"]])),
            "exclude_modules": mostly(st.none(), st.just(["2"])),
            "bias": st.sampled_from(["none", "all"]),
        }
    ),
)


def spectrum(layer: dict[str, Any]) -> LayerSpectrum:
    k = layer["components"].shape[0]
    values = torch.linspace(1.0, 0.1, k)
    return LayerSpectrum(layer["components"], values.sqrt(), values, values / 10, 100, True, 2, layer["name"])


def expected_failure(drawn: list[dict[str, Any]], kwargs: dict[str, Any] | None) -> str | None:
    """Why apply must refuse these inputs (the first reason found), else None."""
    kept = [layer for layer in drawn if layer["rank"] > 0 and 0 <= layer["rank"] <= layer["components"].shape[0]]
    for layer in drawn:
        if not layer["spectrum"] or not 0 <= layer["rank"] <= layer["components"].shape[0]:
            return "rank"
    for layer in kept:
        if layer["name"] not in WIDTHS:
            return "unknown layer"
        if layer["width"] != WIDTHS[layer["name"]]:
            return "width"
        if not torch.isfinite(layer["components"][: layer["rank"]]).all():
            return "nan"
    if kwargs is not None and (kwargs["r"] < 1 or kwargs["lora_alpha"] <= 0 or not 0 <= kwargs["lora_dropout"] < 1):
        return "lora_config"
    if not kept:
        return "all ranks zero"
    if kwargs is not None:
        # the linear layers saved whole: peft matches a name as a suffix after a dot, so "0" is also "4.0"
        saved = {"4": {"4.0"}, "0": {"0", "4.0"}}.get((kwargs["modules_to_save"] or [""])[0], set())
        left_out = {*(kwargs["exclude_modules"] or ()), *saved}
        if any(layer["name"] in left_out for layer in kept):
            return "left out by lora_config"
    return None


@settings(max_examples=250)
@given(
    drawn=st.lists(layers(), min_size=1, max_size=4, unique_by=lambda layer: layer["name"]),
    kwargs=lora_configs,
    rank=st.integers(1, 4),
    adjust=st.booleans(),
)
def test_apply_builds_the_adapters_or_refuses_with_the_model_untouched(drawn, kwargs, rank, adjust) -> None:
    config = EvaConfig(rank=rank, rho=2.0, adjust_scaling_factors=adjust)
    spectra = {layer["name"]: spectrum(layer) for layer in drawn if layer["spectrum"]}
    state = EvaState(spectra, {layer["name"]: layer["rank"] for layer in drawn}, 2, config)
    try:
        lora_config = None if kwargs is None else LoraConfig(**kwargs)
    except (ValueError, TypeError):
        event("LoraConfig refused by peft itself")
        return
    net = model().eval()
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base_output = net(x)
    before = snapshot(net)
    reason = expected_failure(drawn, kwargs)
    try:
        result = apply(net, state, lora_config)
    except EvaError as error:
        event(f"refused: {reason}")
        assert reason is not None, f"a valid input was refused: {error}"
        assert_unchanged(net, before)
        return
    event("applied")
    assert reason is None, f"an invalid input ({reason}) was accepted"
    assert isinstance(result, PeftModel)
    check_adapters(result, state, x, base_output)


def check_adapters(result: PeftModel, state: EvaState, x: torch.Tensor, base_output: torch.Tensor) -> None:
    modules = dict(result.get_base_model().named_modules())
    for name, rank in state.ranks.items():
        if rank == 0:
            assert not hasattr(modules.get(name), "lora_A"), name
            continue
        layer = modules[name]
        assert torch.equal(layer.lora_A["default"].weight, state.components(name)), name
        assert not layer.lora_B["default"].weight.any(), name
    result.eval()
    with torch.no_grad():
        assert torch.equal(result(x), base_output)
