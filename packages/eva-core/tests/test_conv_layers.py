"""Conv layers in eva-core's mechanism: components of unfolded patches become a conv LoRA ``A``.

eva-core has no rows function for convs (eva-vision owns that); here a test plugin unfolds patches so
the core's part — widths, ``apply``'s reshape to (r, C_in, k_h, k_w), output unchanged — is checked.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from eva_core import PluginManager, apply, fit, hookimpl, plugin_manager
from eva_core.capture import input_width
from eva_core.errors import TooFewRowsWarning

SETTINGS = {"rank": 2, "rho": 1.0, "tau": 0.0, "min_steps": 3, "max_steps": 3, "progress": False}


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
        self.point = nn.Conv2d(8, 6, kernel_size=1)
        self.unused = nn.Conv2d(6, 4, kernel_size=(3, 2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.point(torch.relu(self.stem(images))).mean(dim=(2, 3))  # (B, 6)


class PatchRows:
    """Rows of a conv: one per output position, the flattened receptive field (C_in * k_h * k_w)."""

    @hookimpl
    def eva_claims_model(self, model):
        return isinstance(model, ConvNet)

    @hookimpl
    def eva_layer_rows(self, name, module):
        def rows(layer_input: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, None]:
            patches = functional.unfold(layer_input, module.kernel_size, module.dilation, module.padding, module.stride)
            return patches.transpose(1, 2).reshape(-1, patches.shape[1]), None  # (B*L, C_in*k_h*k_w)

        return rows


@pytest.fixture
def patch_domain() -> PluginManager:
    manager = plugin_manager(load_entry_points=False)
    manager.register(PatchRows(), "patches")
    return manager


def image_batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 0.3, 0.05]).view(1, 3, 1, 1)  # channels of decaying variance
    return [torch.randn(4, 3, 12, 12, generator=generator) * scale for _ in range(count)]


def test_conv_lora_a_holds_the_patch_components(patch_domain: PluginManager) -> None:
    torch.manual_seed(0)
    model = ConvNet().eval()
    batches = image_batches(3)
    with pytest.warns(TooFewRowsWarning, match="'unused' never ran"):
        state = fit(model, batches, target_modules=["stem", "point", "unused"], plugins=patch_domain, **SETTINGS)
    assert state.layers["stem"].components.shape == (2, 3 * 3 * 3)
    assert state.layers["unused"].components.shape == (0, 6 * 3 * 2)
    with torch.no_grad():
        reference = model(batches[0])
    peft_model = apply(model, state, plugins=patch_domain)
    layers = dict(peft_model.get_base_model().named_modules())
    for name in ("stem", "point"):
        weight_a = layers[name].lora_A["default"].weight  # (r, C_in, k_h, k_w)
        assert weight_a.shape[1:] == layers[name].base_layer.weight.shape[1:]
        assert torch.equal(weight_a.reshape(weight_a.shape[0], -1), state.components(name))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(batches[0]), reference, rtol=0, atol=0)
    # the first A row is the top principal direction of the stem's patches: it reads the loud channel
    top = state.components("stem")[0].reshape(3, 3, 3).abs().sum(dim=(1, 2))
    assert top.argmax() == 0


def test_input_width_of_layers_that_never_ran() -> None:
    assert input_width(nn.Linear(5, 3)) == 5
    assert input_width(nn.Conv2d(6, 4, kernel_size=(3, 2))) == 36
    assert input_width(nn.Conv2d(8, 8, kernel_size=3, groups=8)) == 9
    assert input_width(nn.ReLU()) == 0
