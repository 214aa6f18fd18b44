"""``eva-lora fit`` driven as a user would on real EfficientNet-Lite0 weights and real Fashion-MNIST images,
through eva-vision's command-line hooks; the readers and the ViT-folder loader in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from vision_models import fashion_mnist_dir, tiny_dinov2

import eva_core
import eva_core.errors
import eva_vision.plugin
from eva_core.hookspecs import LoadedModel
from eva_core.testing import assert_one_line_error
from eva_core.testing import run_cli as eva
from eva_vision import cli, load_efficientnet_lite0

T10K = "t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def effnet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``eva-lora fit efficientnet-lite0 <Fashion-MNIST folder> -o split=t10k`` on 16 real images (2 batches of
    8), rank 2."""
    out = tmp_path_factory.mktemp("effnet") / "run"
    data = fashion_mnist_dir()
    result = eva(
        "fit", "efficientnet-lite0", str(data), "--domain", "vision", "--rank", "2", "--max-batches", "2",
        "--batch-size", "8", "-o", "split=t10k", "--out", str(out), domains=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result


def test_fit_efficientnet_writes_a_state_and_a_plain_peft_adapter(
    effnet_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    from peft import PeftModel

    out, result = effnet_run
    assert "EVA fit of efficientnet-lite0" in result.stdout and "2 batches" in result.stdout
    assert "Traceback" not in result.stderr
    state = eva_core.EvaState.load(out / "state")
    assert state.steps == 2 and state.extra["domain"] == "vision"
    assert state.config.whiten is True  # the domain's default, as in Python, without --whiten
    assert sum(state.ranks.values()) == 2 * len(state.ranks)
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["modules_to_save"] == ["classifier"]
    loaded = PeftModel.from_pretrained(load_efficientnet_lite0(10, seed=0), str(out / "adapter"))
    modules = dict(loaded.base_model.model.named_modules())
    checked = 0
    for name, rank in state.ranks.items():
        if rank:
            weight = modules[name].lora_A["default"].weight  # conv: (r, C_in, k_h, k_w)
            assert torch.allclose(weight, state.components(name).reshape(weight.shape), atol=1e-6)
            checked += 1
    assert checked == sum(1 for rank in state.ranks.values() if rank)


def test_vision_cli_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "features.npy"
    np.save(bad, np.zeros((4, 5), dtype=np.float32))
    out = str(tmp_path / "out")  # not tmp_path itself: it holds the data, and --out may not hold an input
    result = eva("fit", "efficientnet-lite0", str(bad), "--domain", "vision", "--out", out, domains=True)
    assert_one_line_error(result, "features.npy", "(N, C, H, W)")
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path / "cache"))
    data = fashion_mnist_dir() / T10K
    result = eva("fit", "dinov2-local", str(data), "--domain", "vision", "--out", out, domains=True)
    assert_one_line_error(result, "benchmarks/pretrain_vision.py")


def test_idx_reader_filters_classes_and_limits_rows() -> None:
    loaded = LoadedModel(torch.nn.Identity(), processor=cli.ImageInput(32, 3, (0.5,), (0.5,)))
    data = str(fashion_mnist_dir() / T10K)
    batches = list(cli.eva_cli_batches(data, loaded, 4, 10, {"classes": "5,6"}))  # type: ignore[arg-type]
    assert [tuple(b.shape) for b in batches] == [(4, 3, 32, 32), (4, 3, 32, 32), (2, 3, 32, 32)]
    images, labels = cli._read_idx_images(Path(data), {})
    assert labels is not None
    first = images[torch.isin(labels, torch.tensor([5, 6]))][:4].float() / 255  # (4, 1, 28, 28)
    expected = torch.nn.functional.interpolate(first, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(batches[0], ((expected - 0.5) / 0.5).expand(-1, 3, -1, -1))
    with pytest.raises(eva_core.errors.InvalidConfigError, match="split='train' contradicts"):
        cli.eva_cli_batches(data, loaded, 4, 10, {"split": "train"})


def test_arrays_and_a_local_vit_folder(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (6, 16, 16), dtype=torch.uint8)  # (N, H, W)
    np.save(tmp_path / "images.npy", images.numpy())
    torch.save([images.float()], tmp_path / "batches.pt")
    tiny_dinov2(num_labels=3).save_pretrained(tmp_path / "vit")
    loaded = cli.eva_cli_load_model(str(tmp_path / "vit"), "x", {"classes": "1,2,3"})
    assert loaded is not None and loaded.processor == cli.ImageInput(16, 1, [0.5], [0.5])
    assert loaded.lora_config is None  # the adapter's fields come from the plugin, as in Python
    assert eva_vision.plugin.eva_lora_fields(loaded.model, []) == {"modules_to_save": ["classifier"]}
    batches = list(cli.eva_cli_batches(str(tmp_path / "images.npy"), loaded, 4, None, {}))  # type: ignore[arg-type]
    assert [tuple(b.shape) for b in batches] == [(4, 1, 16, 16), (2, 1, 16, 16)]
    torch.testing.assert_close(batches[0], images[:4, None].float() / 255 * 2 - 1)
    assert cli.eva_cli_batches(str(tmp_path / "batches.pt"), loaded, 4, None, {}) is None  # eva-core's reader
    assert cli.eva_cli_load_model("minilm", "x", {}) is None


def test_dinov2_local_alias_reads_the_cached_model_and_its_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))
    folder = cli.dinov2_local_dir()
    assert folder == tmp_path / "dinov2-arch-fmnist04" / cli.DINOV2_LOCAL_KEY
    tiny_dinov2(num_labels=5).save_pretrained(folder)
    with pytest.raises(eva_core.errors.MissingDataError, match=r"benchmarks/pretrain_vision\.py"):
        cli.eva_cli_load_model("dinov2-local", "x", {})  # no image processor saved with it
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.286], "image_std": [0.353]}))
    loaded = cli.eva_cli_load_model("dinov2-local", "x", {"classes": "5,6,7,8,9"})
    assert loaded is not None and loaded.processor == cli.ImageInput(16, 1, [0.286], [0.353])
    torch.testing.assert_close(loaded.model.classifier.weight, tiny_dinov2(num_labels=5).classifier.weight)


def test_efficientnet_without_timm_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(eva_core.errors.MissingDataError, match=r"pip install 'eva-vision\[efficientnet\]'"):
        cli.eva_cli_load_model("efficientnet-lite0", "x", {})
