"""ViTs: token rows per layer, token selection, the fused timm qkv, the head trained in full, whitening."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from vision_models import grey_images, tiny_dinov2, tiny_timm_vit

import eva_core
import eva_core.errors
import eva_vision
from eva_vision.architectures import target_modules

QUICK = {"tau": 0.0, "max_steps": 2, "min_steps": 2, "progress": False, "domain": "vision"}


def _batches(images: torch.Tensor, size: int = 8) -> list[torch.Tensor]:
    return [images[i : i + size] for i in range(0, len(images), size)]


@pytest.mark.parametrize(("tokens", "per_image"), [("all", 1 + 2 + 16), ("patch", 16), ("cls", 1)])
def test_rows_per_layer_count_the_selected_tokens(tokens: str, per_image: int) -> None:
    model = tiny_dinov2(registers=2)  # 16 x 16 images in 4 x 4 patches: CLS + 2 registers + 16 patches
    batches = [eva_vision.ImageBatch(b, tokens) for b in _batches(grey_images(16, 16))]  # type: ignore[arg-type]
    if tokens == "cls":  # the first block's CLS input is the same for every image: no variance, rank 0
        with pytest.warns(eva_core.errors.EvaWarning, match=r"no variance.*encoder\.layer\.0\.attention\.q_proj"):
            state = eva_core.fit(model, batches, rank=2, **QUICK)
    else:
        state = eva_core.fit(model, batches, rank=2, **QUICK)
    targets = target_modules(model)
    assert set(state.layers) == set(targets)
    assert {state.layers[name].rows for name in targets} == {16 * per_image}


def test_transformers_targets_are_the_block_linears_only() -> None:
    for model in (tiny_dinov2(), tiny_dinov2(swiglu=True)):
        targets = target_modules(model)
        assert len(targets) == 2 * (6 if "fc1" in " ".join(targets) else 7)
        assert all(".encoder.layer." in name for name in targets)
        assert not any("embeddings" in name or "classifier" in name for name in targets)


def test_timm_fused_qkv_is_targeted_and_adapted() -> None:
    model = tiny_timm_vit()
    targets = target_modules(model)
    assert targets == [
        f"blocks.{i}.{layer}" for i in range(2) for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    ]
    images = grey_images(16, 28).expand(-1, 3, -1, -1)
    peft_model = eva_vision.init(model, _batches(images), rank=2, **{k: v for k, v in QUICK.items() if k != "domain"})
    state = peft_model.eva_state
    assert state.layers["blocks.0.attn.qkv"].rows == 16 * (5 + 4)  # CLS + 4 registers + 2 x 2 patches
    assert state.ranks["blocks.0.attn.qkv"] > 0
    qkv = peft_model.get_base_model().blocks[0].attn.qkv
    assert qkv.lora_A["default"].weight.shape == (state.ranks["blocks.0.attn.qkv"], 64)


def test_head_is_saved_and_trained_in_full_and_whitening_is_the_default() -> None:
    model = tiny_dinov2()
    batches = [{"pixel_values": b} for b in _batches(grey_images(32, 16))]
    peft_model = eva_vision.init(model, batches, rank=2, **{k: v for k, v in QUICK.items() if k != "domain"})
    assert peft_model.peft_config["default"].modules_to_save == ["classifier"]
    head = peft_model.get_base_model().classifier
    assert all(p.requires_grad for p in head.modules_to_save["default"].parameters())  # a trainable copy
    assert not any(p.requires_grad for n, p in peft_model.named_parameters() if "embeddings" in n)
    state = peft_model.eva_state
    assert state.config.whiten is True

    name = "dinov2.encoder.layer.0.attention.q_proj"
    layer = peft_model.get_base_model().get_submodule(name)
    seen: list[torch.Tensor] = []
    handle = layer.base_layer.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    with torch.no_grad():
        for batch in batches[: state.steps]:
            peft_model(**batch)
    handle.remove()
    rows = torch.cat(seen).reshape(-1, 32)  # (N, d_in): every token of the fitted batches
    projected = (rows - rows.mean(0)) @ layer.lora_A["default"].weight.T  # (N, r)
    torch.testing.assert_close(projected.var(0), torch.ones(projected.shape[1]), rtol=0.02, atol=0)


def test_token_selection_needs_a_vit() -> None:
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    with pytest.raises(eva_core.errors.InvalidConfigError, match=r"tokens='patch'.*not a ViT"):
        eva_vision.init(cnn, [torch.randn(2, 1, 8, 8)] * 2, tokens="patch", rank=1, progress=False)
    with pytest.raises(eva_core.errors.InvalidConfigError, match="tokens='patches'"):
        eva_vision.init(cnn, [torch.randn(2, 1, 8, 8)], tokens="patches", rank=1)  # type: ignore[arg-type]
