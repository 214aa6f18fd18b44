"""``initialize``: every LoRA initialization by name, checked against its definition on a tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from eva_bench import INIT_METHODS, initialize
from eva_bench.initializations import peft_init_weights
from eva_core.errors import InvalidConfigError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))


def _delta(layer: nn.Module) -> torch.Tensor:
    """The adapter's contribution ``scaling * B @ A`` (d_out, d_in)."""
    return layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight


def test_names_map_to_peft_init_values() -> None:
    assert peft_init_weights("lora") is True
    assert peft_init_weights("pissa") == "pissa"
    assert peft_init_weights("pissa_niter_4") == "pissa_niter_4"
    assert peft_init_weights("olora") == "olora"
    assert set(INIT_METHODS) == {"lora", "eva", "pissa", "olora"}
    for bad in ("loftq", "pissa_niter_", "pissa_niter_x", "EVA"):
        with pytest.raises(InvalidConfigError, match="method="):
            peft_init_weights(bad)


def test_lora_starts_with_b_zero_and_a_random() -> None:
    peft_model = initialize(_model(), "lora", rank=3, target_modules=["0", "2"])
    layer = peft_model.base_model.model[0]
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    assert layer.lora_A["default"].weight.shape == (3, 12)
    assert torch.count_nonzero(layer.lora_A["default"].weight) == 3 * 12


@pytest.mark.parametrize("method", ["pissa", "olora"])
def test_weight_methods_keep_w_equal_to_residual_plus_adapter(method: str) -> None:
    base = _model()
    original = copy.deepcopy(base)
    peft_model = initialize(base, method, rank=3, target_modules=["0", "2"])
    for index in (0, 2):
        layer = peft_model.base_model.model[index]
        rebuilt = layer.base_layer.weight + _delta(layer)
        torch.testing.assert_close(rebuilt, original[index].weight, rtol=0, atol=1e-5)


def test_pissa_adapter_spans_the_top_singular_directions() -> None:
    original = _model()
    weight = original[0].weight.detach().clone()
    peft_model = initialize(original, "pissa", rank=3, target_modules=["0"])
    u, s, vh = torch.linalg.svd(weight)
    principal = u[:, :3] @ torch.diag(s[:3]) @ vh[:3]
    torch.testing.assert_close(_delta(peft_model.base_model.model[0]), principal, rtol=0, atol=1e-5)


def test_eva_needs_batches_and_measures_them() -> None:
    with pytest.raises(InvalidConfigError, match="batches"):
        initialize(_model(), "eva", rank=2, target_modules=["0"])
    batches = [torch.randn(16, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    peft_model = initialize(
        _model(), "eva", batches, rank=2, target_modules=["0", "2"], eva_overrides={"tau": 0.0, "progress": False}
    )
    assert sum(peft_model.eva_state.ranks.values()) == 4
    layer = peft_model.base_model.model[0]
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0


def test_eva_whiten_gives_unit_variance_projections() -> None:
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([30.0, 10.0, 3.0] + [1.0] * 9)
    batches = [torch.randn(64, 12, generator=generator) * scales for _ in range(4)]
    overrides = {"rho": 1.0, "tau": 0.0, "progress": False}
    plain = initialize(_model(), "eva", batches, rank=2, target_modules=["0"], eva_overrides=overrides)
    white = initialize(_model(), "eva_whiten", batches, rank=2, target_modules=["0"], eva_overrides=overrides)
    rows = torch.cat(batches)  # (N, 12)
    for model, expected in ((plain, None), (white, 1.0)):
        weight_a = model.base_model.model[0].lora_A["default"].weight  # (2, 12)
        std = (rows @ weight_a.T).std(dim=0)
        if expected is None:
            assert std[0] > 20  # unit rows along the input's top direction keep its spread
        else:
            torch.testing.assert_close(std, torch.full_like(std, expected), rtol=0.05, atol=0)
    assert white.eva_state.config.whiten and not plain.eva_state.config.whiten


def test_every_method_gets_the_same_layers_and_rank() -> None:
    batches = [torch.randn(16, 12, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    shapes = {}
    for method in ("lora", "pissa", "olora", "eva", "eva_whiten"):
        peft_model = initialize(
            _model(), method, batches, rank=2, target_modules=["0", "2"], eva_overrides={"rho": 1.0, "tau": 0.0}
        )
        shapes[method] = {n: tuple(p.shape) for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all(shape == shapes["lora"] for shape in shapes.values())


class _TransposedNet(nn.Module):
    """Two GPT-2 ``Conv1D`` layers (weights stored (d_in, d_out)), as a Decision Transformer's blocks."""

    def __init__(self) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        torch.manual_seed(0)
        self.up, self.down = Conv1D(10, 12), Conv1D(6, 10)  # Conv1D(d_out, d_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def test_olora_on_conv1d_factors_w_as_peft_does_for_the_same_linear() -> None:
    """The reference: peft's OLoRA on ``nn.Linear`` layers holding the same W (transposed storage)."""
    pytest.importorskip("transformers")
    from peft import LoraConfig

    transposed = _TransposedNet()
    linear = _model()
    with torch.no_grad():
        linear[0].weight.copy_(transposed.up.weight.T)
        linear[0].bias.copy_(transposed.up.bias)
        linear[2].weight.copy_(transposed.down.weight.T)
        linear[2].bias.copy_(transposed.down.bias)
    x = torch.randn(5, 12)
    with torch.no_grad():
        reference_output = transposed(x)
    config = LoraConfig(r=3, lora_alpha=6, fan_in_fan_out=True)
    ours = initialize(transposed, "olora", rank=3, target_modules=["up", "down"], lora_config=config)
    theirs = initialize(linear, "olora", rank=3, target_modules=["0", "2"], lora_config=LoraConfig(r=3, lora_alpha=6))
    for mine, peft_layer in ((ours.base_model.model.up, theirs.base_model.model[0]),
                             (ours.base_model.model.down, theirs.base_model.model[2])):  # fmt: skip
        torch.testing.assert_close(mine.lora_A["default"].weight, peft_layer.lora_A["default"].weight)
        torch.testing.assert_close(mine.lora_B["default"].weight, peft_layer.lora_B["default"].weight)
        torch.testing.assert_close(mine.get_base_layer().weight.T, peft_layer.get_base_layer().weight)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference_output, rtol=1e-5, atol=1e-5)  # W_res + sBA == W


class _ConvNet(nn.Module):
    """A 3x3 conv and a pointwise conv: peft's PiSSA/OLoRA refuse ``Conv2d``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.point = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point(torch.relu(self.stem(x)))


@pytest.mark.parametrize("method", ["pissa", "olora"])
def test_pointwise_conv_factors_as_peft_does_for_the_same_linear(method: str) -> None:
    """A 1x1 conv is a linear map of each pixel: peft's own PiSSA/OLoRA on that ``nn.Linear`` is the reference."""
    from peft import LoraConfig

    conv = nn.Sequential(nn.Conv2d(12, 10, 1))
    linear = nn.Sequential(nn.Linear(12, 10))
    with torch.no_grad():
        linear[0].weight.copy_(conv[0].weight.reshape(10, 12))
        linear[0].bias.copy_(conv[0].bias)
    config = LoraConfig(r=3, lora_alpha=6)
    ours = initialize(conv, method, rank=3, target_modules=["0"], lora_config=config).base_model.model[0]
    theirs = initialize(linear, method, rank=3, target_modules=["0"], lora_config=config).base_model.model[0]
    torch.testing.assert_close(ours.lora_A["default"].weight.reshape(3, 12), theirs.lora_A["default"].weight)
    torch.testing.assert_close(ours.lora_B["default"].weight.reshape(10, 3), theirs.lora_B["default"].weight)
    torch.testing.assert_close(ours.get_base_layer().weight.reshape(10, 12), theirs.get_base_layer().weight)


@pytest.mark.parametrize("method", ["pissa", "pissa_niter_4", "milora", "olora"])
def test_conv_residual_plus_adapter_is_w(method: str) -> None:
    model = _ConvNet()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        reference = model(x)
        stem = model.stem.weight.reshape(8, -1).clone()  # (C_out, C_in * 9)
    peft_model = initialize(model, method, rank=2, target_modules=["stem", "point"])
    layer = peft_model.base_model.model.stem
    weight_a, weight_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert weight_a.shape == (2, 3, 3, 3) and weight_b.shape == (8, 2, 1, 1)
    adapter = layer.scaling["default"] * weight_b.reshape(8, 2) @ weight_a.reshape(2, -1)  # (C_out, C_in * 9)
    torch.testing.assert_close(layer.get_base_layer().weight.reshape(8, -1) + adapter, stem, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x), reference, rtol=1e-4, atol=1e-5)
    if method == "pissa":  # the adapter holds the top right singular directions of W (the fast variant
        # approximates them: with this flat random spectrum its second direction is off)
        top = torch.linalg.svd(stem, full_matrices=False).Vh[:2]  # (2, C_in * 9)
        rows = torch.linalg.qr(weight_a.reshape(2, -1).T).Q.T  # an orthonormal basis of A's row space
        torch.testing.assert_close((top @ rows.T).norm(dim=-1), torch.ones(2), atol=1e-4, rtol=0)
    if method == "milora":  # the adapter holds the two smallest of W's 8 singular directions
        minor = torch.linalg.svd(stem, full_matrices=False).Vh[-2:]  # (2, C_in * 9)
        rows = torch.linalg.qr(weight_a.reshape(2, -1).T).Q.T
        torch.testing.assert_close((minor @ rows.T).norm(dim=-1), torch.ones(2), atol=1e-4, rtol=0)
