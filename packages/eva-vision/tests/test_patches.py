"""Receptive-field rows of a Conv2d against references built another way, and EVA on a conv end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from vision_models import read_fashion_mnist

import eva_core
import eva_core.errors
from eva_vision.patches import conv_rows


def _loop_rows(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Patches read one output position at a time from an explicitly padded input (the reference)."""
    (k_h, k_w), (s_h, s_w), (d_h, d_w) = conv.kernel_size, conv.stride, conv.dilation
    p_h, p_w = conv.padding  # type: ignore[misc]
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    padded = F.pad(x, (p_w, p_w, p_h, p_h), mode=mode)
    out_h = (padded.shape[2] - d_h * (k_h - 1) - 1) // s_h + 1
    out_w = (padded.shape[3] - d_w * (k_w - 1) - 1) // s_w + 1
    rows = []
    for b in range(x.shape[0]):
        for i in range(out_h):
            for j in range(out_w):
                window = padded[
                    b, :, i * s_h : i * s_h + d_h * (k_h - 1) + 1 : d_h, j * s_w : j * s_w + d_w * (k_w - 1) + 1 : d_w
                ]
                rows.append(window.reshape(-1))  # (C_in * k_h * k_w,) in (C_in, k_h, k_w) order
    return torch.stack(rows)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_rows_match_a_loop_over_output_positions(padding_mode: str) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), padding_mode=padding_mode)
    x = torch.randn(2, 3, 9, 8)
    rows = conv_rows(x, conv)
    torch.testing.assert_close(rows, _loop_rows(x, conv))
    out = conv(x)  # (B, C_out, H_out, W_out)
    flat = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1])  # (N, C_out)
    torch.testing.assert_close(flat, rows @ conv.weight.reshape(4, -1).T + conv.bias, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("kernel", [1, 2, 3])
def test_same_padding_and_pointwise_rows_reproduce_the_conv(kernel: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, kernel, padding="same", bias=False)
    x = torch.randn(2, 3, 6, 7)
    out = conv(x).permute(0, 2, 3, 1).reshape(-1, 5)  # (N, C_out)
    torch.testing.assert_close(out, conv_rows(x, conv) @ conv.weight.reshape(5, -1).T, rtol=1e-5, atol=1e-5)


def _cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(6, 8, (3, 2), stride=(1, 2), padding=(2, 1)),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: not targeted
        nn.Flatten(),
    ).eval()


def test_eva_components_are_the_top_right_singular_vectors_of_the_patch_matrix() -> None:
    model = _cnn()
    images = read_fashion_mnist("test", limit=48)[0].float() / 255  # real images (N, 1, 28, 28)
    batches = [images[i : i + 16] for i in range(0, 48, 16)]
    state = eva_core.fit(
        model, batches, domain="vision", rank=3, rho=1.0, tau=0.0, max_steps=3, min_steps=3, progress=False
    )
    assert sorted(state.ranks) == ["0", "2"]  # the depthwise conv is left out
    with torch.no_grad():
        hidden = model[1](model[0](images))  # (N, 6, 14, 14): the input of the second conv
    for name, layer_input in (("0", images), ("2", hidden)):
        conv = model[int(name)]
        explicit = _loop_rows(layer_input, conv)  # (N, C_in * k_h * k_w)
        centered = explicit - explicit.mean(0)
        _, _, vh = torch.linalg.svd(centered.double(), full_matrices=False)
        components = state.components(name, whiten=False).double()  # (3, C_in * k_h * k_w): unit directions
        cosines = (components @ vh[:3].T).diagonal().abs()
        torch.testing.assert_close(cosines, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-4)
        assert state.layers[name].rows == explicit.shape[0]

    peft_model = eva_core.apply(copy.deepcopy(model), state)
    with torch.no_grad():
        torch.testing.assert_close(peft_model(images), model(images), rtol=0, atol=0)
    layers = dict(peft_model.get_base_model().named_modules())
    for name in ("0", "2"):
        weight_a = layers[name].lora_A["default"].weight  # (r, C_in, k_h, k_w)
        torch.testing.assert_close(weight_a.reshape(weight_a.shape[0], -1), state.components(name))


@pytest.mark.parametrize(
    ("conv", "reason"),
    [
        (nn.Conv2d(2, 2, 3, dilation=2, padding=2), "dilation"),
        (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    ],
)
def test_a_conv_peft_cannot_adapt_faithfully_is_refused_by_name(conv: nn.Conv2d, reason: str) -> None:
    model = nn.Sequential(conv, nn.Flatten()).eval()
    with pytest.raises(eva_core.errors.UnsupportedLayerError, match=rf"'0'.*{reason}"):
        eva_core.fit(model, [torch.randn(4, 2, 8, 8)] * 2, domain="vision", rank=1, progress=False)
