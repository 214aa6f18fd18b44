"""EfficientNet-Lite0 (real ImageNet weights) EVA-initialized on real Fashion-MNIST images: training lowers
the loss, and the saved adapter reloads with plain peft; the recipe returns a complete RunRecord; the
locally pretrained model is cached where ``eva-lora fit dinov2-local`` looks for it."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from peft import PeftModel
from torch import nn

import eva_bench
import eva_core.errors
import eva_vision
from eva_bench.vision import pretraining, run_from_args
from eva_bench.vision.data import read_fashion_mnist
from eva_bench.vision.recipe import finetune, freeze_batch_norm
from eva_vision import cli
from eva_vision.architectures import target_modules
from eva_vision.efficientnet import MEAN, STD


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _tiny_dinov2(num_labels: int) -> nn.Module:
    """A random transformers DINOv2 classifier: 16 x 16 grey images, 4 x 4 patches, width 32, 2 blocks."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    torch.manual_seed(0)
    config = Dinov2Config(
        image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_labels=num_labels,
    )  # fmt: skip
    return Dinov2ForImageClassification(config).eval()


def _loss(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(x), y)) for x, y in batches) / len(batches)


def test_eva_finetuning_lowers_the_loss_and_reloads_with_plain_peft(tmp_path: Path) -> None:
    effnet = eva_vision.load_efficientnet_lite0(5, seed=0)
    images, labels = read_fashion_mnist("train", classes=range(5, 10), limit=128)
    x = eva_vision.to_model_input(images, size=64, channels=3, mean=MEAN, std=STD)
    batches = [(x[i : i + 16], labels[i : i + 16] - 5) for i in range(0, 128, 16)]
    train, held_out = batches[:6], batches[6:]
    peft_model = eva_vision.init(
        copy.deepcopy(effnet), train, rank=4, max_steps=6, min_steps=6, tau=0.0, progress=False
    )
    state = peft_model.eva_state
    assert sum(state.ranks.values()) == 4 * len(state.ranks) == 4 * len(target_modules(effnet))
    assert "classifier" in peft_model.peft_config["default"].modules_to_save

    peft_model.eval()
    before = (_loss(peft_model, train), _loss(peft_model, held_out))
    eva_bench.train(
        peft_model,
        train,
        lambda m, batch: F.cross_entropy(freeze_batch_norm(m)(batch[0]), batch[1]),
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
    with torch.no_grad():
        torch.testing.assert_close(reloaded(held_out[0][0]), peft_model(held_out[0][0]), rtol=0, atol=0)


def test_recipe_runs_eva_and_records_ranks() -> None:
    record = finetune(
        _tiny_dinov2(num_labels=10),
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


def test_compare_runs_a_peft_baseline_on_efficientnet() -> None:
    args = argparse.Namespace(
        model="efficientnet-lite0", task="fmnist-5-9", steps=2, eval_at=[2], rank=2, lr=1e-3, batch_size=8,
        train_limit=16, dev_limit=8, eva_max_batches=None,
    )  # fmt: skip
    record = run_from_args(args, "lora", 0)
    assert record.extra == {} and 0.0 <= record.final() <= 1.0 and record.final("loss") > 0


def test_pretraining_is_cached_with_its_processor_where_the_cli_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pretraining.PretrainSettings().key() == cli.DINOV2_LOCAL_KEY  # eva-lora fit dinov2-local finds the default
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))
    assert pretraining.pretrained_dir() == cli.dinov2_local_dir()
    settings = pretraining.PretrainSettings(hidden_size=16, layers=1, heads=2, steps=2, batch_size=8, train_limit=16)
    folder = pretraining.pretrain(settings, dev_limit=16)
    assert folder == tmp_path / cli.DINOV2_LOCAL_CACHE / settings.key()
    record = pretraining.pretrain_record(folder)
    assert record is not None and record["label"] == pretraining.LABEL and 0.0 <= record["dev"]["accuracy"] <= 1.0
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == list(pretraining.FMNIST_MEAN) and processor["size"] == {"height": 28, "width": 28}
    (folder / "preprocessor_config.json").unlink()  # as saved before models carried their processor
    model = pretraining.load_pretrained(settings, num_labels=3, build=False)
    assert model.classifier.out_features == 3 and (folder / "preprocessor_config.json").is_file()
    with pytest.raises(eva_core.errors.MissingDataError, match=r"benchmarks/pretrain_vision\.py"):
        pretraining.load_pretrained(pretraining.PretrainSettings(steps=3), build=False)


def test_a_validation_split_takes_the_curve_and_dev_is_scored_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last ``validation`` train images score the curve and are not trained on; the dev images are
    scored once, after the last step."""
    from eva_bench.vision import recipe

    scored: list[int] = []
    original = recipe.evaluate
    monkeypatch.setattr(
        recipe, "evaluate", lambda m, b, k: scored.append(sum(len(y) for _, y in b)) or original(m, b, k)
    )
    record = recipe.finetune(
        _tiny_dinov2(10), "digits", "lora", steps=2, eval_at=[0, 2], rank=2, batch_size=8, train_limit=16,
        validation=12, dev_limit=20, image_spec=(16, 1, (0.5,), (0.5,)),
    )  # fmt: skip
    assert scored == [12, 12, 20]
    assert record.held_out is not None and record.held_out["accuracy"] in {k / 20 for k in range(21)}
