"""``eva_vision.init`` is ``eva_core.init`` with this domain's defaults (stated once, in the plugin) plus the
ViT tokens to measure."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from vision_models import grey_images, tiny_dinov2

import eva_core
import eva_vision
from eva_vision import ImageBatch
from eva_vision.plugin import DEFAULT_CONFIG

QUICK = {"max_steps": 3, "min_steps": 3, "progress": False}


def _lora_a(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters() if "lora_A" in name}


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")  # 3 batches: too few to converge
def test_eva_core_init_gives_what_eva_vision_init_gives() -> None:
    model = tiny_dinov2()
    batches = [{"pixel_values": b} for b in grey_images(24, 16).split(8)]
    ours = eva_vision.init(copy.deepcopy(model), batches, **QUICK)
    core = eva_core.init(copy.deepcopy(model), batches, **QUICK)
    assert ours.eva_state.config == core.eva_state.config.replace(domain="vision")  # core chose it by claim
    config = ours.eva_state.config
    assert {field: getattr(config, field) for field in DEFAULT_CONFIG} == dict(DEFAULT_CONFIG)
    assert config.tau == 0.99  # eva-core's default rule, as in every domain
    assert ours.eva_state.ranks == core.eva_state.ranks
    assert ours.peft_config["default"] == core.peft_config["default"]
    assert ours.peft_config["default"].modules_to_save == ["classifier"]
    assert ours.peft_config["default"].lora_alpha == DEFAULT_CONFIG["rank"]
    expected = _lora_a(core)
    for name, weight in _lora_a(ours).items():
        torch.testing.assert_close(weight, expected[name], rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")
def test_tokens_is_image_batches_selecting_them_and_overrides_win() -> None:
    model = tiny_dinov2(registers=2)
    images = grey_images(24, 16).split(8)
    ours = eva_vision.init(copy.deepcopy(model), list(images), tokens="patch", rank=2, whiten=False, **QUICK)
    wrapped = [ImageBatch(b, "patch") for b in images]
    core = eva_core.init(copy.deepcopy(model), wrapped, rank=2, whiten=False, **QUICK)
    assert ours.eva_state.config == core.eva_state.config.replace(domain="vision")
    assert ours.eva_state.config.whiten is False
    assert {layer.rows for layer in ours.eva_state.layers.values()} == {24 * 16}  # 16 patches, no CLS or registers
    expected = _lora_a(core)
    for name, weight in _lora_a(ours).items():
        torch.testing.assert_close(weight, expected[name], rtol=0, atol=0)
