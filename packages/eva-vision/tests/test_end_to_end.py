"""EfficientNet-Lite0 (real ImageNet weights) EVA-initialized on real Fashion-MNIST images: training lowers
the loss, and the saved adapter reloads with plain peft; the recipe returns a complete RunRecord."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from peft import PeftModel
from torch import nn
from vision_models import tiny_dinov2

import eva_core
import eva_vision


def _loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)


def test_eva_finetuning_lowers_the_loss_and_reloads_with_plain_peft(
    effnet: nn.Module, effnet_batches: list[tuple[torch.Tensor, torch.Tensor]], tmp_path: Path
) -> None:
    train, held_out = effnet_batches[:6], effnet_batches[6:]
    peft_model = eva_vision.init(
        copy.deepcopy(effnet), train, rank=4, max_steps=6, min_steps=6, tau=0.0, progress=False
    )
    state = peft_model.eva_state
    assert sum(state.ranks.values()) == 4 * len(state.ranks) == 4 * len(eva_vision.target_modules(effnet))
    assert "_fc" in peft_model.peft_config["default"].modules_to_save

    peft_model.eval()
    before = (_loss(peft_model, train), _loss(peft_model, held_out))
    eva_core.train(
        peft_model,
        train,
        lambda m, batch: F.cross_entropy(eva_vision.freeze_batch_norm(m)(batch[0]), batch[1]),
        lambda m: {},
        steps=12,
        eval_at=[],
        lr=3e-3,
    )
    peft_model.eval()
    after = (_loss(peft_model, train), _loss(peft_model, held_out))
    assert after[0] < 0.8 * before[0], (before, after)
    assert after[1] < before[1], (before, after)

    peft_model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(eva_vision.load_efficientnet_lite0(5, seed=1), tmp_path).eval()
    images = held_out[0][0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images), peft_model(images), rtol=0, atol=0)


def test_recipe_runs_eva_and_records_ranks() -> None:
    record = eva_vision.finetune(
        tiny_dinov2(num_labels=10),
        "digits",
        "eva",
        steps=4,
        eval_at=[0, 4],
        rank=2,
        batch_size=16,
        train_limit=64,
        dev_limit=32,
        image_spec=(16, 1, (0.5,), (0.5,)),
        eva_overrides={"max_steps": 3, "tau": 0.0},
    )
    assert record.metric == "accuracy" and [p.step for p in record.curve] == [0, 4]
    assert set(record.curve[-1].metrics) == {"accuracy", "loss"}
    assert set(record.extra) == {"ranks", "eva_batches", "eva_seconds", "explained_variance"}
    assert sum(record.extra["ranks"].values()) == 2 * len(record.extra["ranks"])
    assert record.extra["explained_variance"].keys() == record.extra["ranks"].keys()
    assert record.init_peak_bytes is None or record.init_peak_bytes > 0


def test_recipe_runs_a_peft_baseline_on_efficientnet() -> None:
    record = eva_vision.finetune(
        "efficientnet-lite0",
        "fmnist-5-9",
        "lora",
        steps=2,
        eval_at=[2],
        rank=2,
        batch_size=8,
        train_limit=16,
        dev_limit=8,
    )
    assert record.extra == {} and 0.0 <= record.final() <= 1.0 and record.final("loss") > 0
