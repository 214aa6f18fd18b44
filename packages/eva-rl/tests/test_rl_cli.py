"""``eva fit`` driven as a user would on a tiny Decision Transformer folder and a tiny Walker2d-v5 task
dataset in a tmp eva cache, through eva-rl's command-line hooks; minari folders and data errors in-process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from rl_policies import ACT_DIM, STATE_DIM, random_policy

import eva_core
from eva_core.hookspecs import LoadedModel
from eva_core.testing import assert_one_line_error
from eva_core.testing import run_cli as eva
from eva_rl import (
    TASKS,
    StateStats,
    Trajectory,
    TrajectoryBatches,
    TrajectoryError,
    cli,
    decision_transformer,
    make_dataset,
)
from eva_rl.tasks import DATASETS_CACHE


@pytest.fixture(scope="module")
def rl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp eva cache holding the ``walker2d`` task's dataset (4 random-policy episodes of at most 30
    steps, recorded under the task's minari id with its record) and a tiny DT saved as ``dt/model`` with a
    ``pretrain.json`` naming context K = 5."""
    cache = tmp_path_factory.mktemp("cache")
    task = TASKS["walker2d"]
    make_dataset(task.env_id, random_policy(), 4, task.dataset_id, root=cache / DATASETS_CACHE, max_episode_steps=30)
    (cache / DATASETS_CACHE / "walker2d.json").write_text(json.dumps({"settings": task.to_json()}))
    torch.manual_seed(0)
    decision_transformer(STATE_DIM, ACT_DIM, hidden_size=32, layers=2, heads=2, max_ep_len=64).save_pretrained(
        cache / "dt" / "model"
    )
    (cache / "dt" / "pretrain.json").write_text(json.dumps({"settings": {"context": 5}}))
    return cache


@pytest.fixture(scope="module")
def dt_run(rl_cache: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``eva fit <dt folder> walker2d`` (the task alias; its dataset is in the cache): 2 batches of 8
    windows, rank 2."""
    out = rl_cache.parent / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVA_CACHE_DIR", str(rl_cache))
        result = eva(
            "fit", str(rl_cache / "dt" / "model"), "walker2d", "--domain", "rl",
            "--rank", "2", "--max-batches", "2", "--batch-size", "8", "--out", str(out), domains=True,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result


def test_fit_dt_on_a_task_writes_a_state_and_a_plain_peft_adapter(
    rl_cache: Path, dt_run: tuple[Path, subprocess.CompletedProcess[str]]
) -> None:
    from peft import PeftModel
    from transformers import DecisionTransformerModel

    out, result = dt_run
    assert "2 batches" in result.stdout and "Traceback" not in result.stderr
    state = eva_core.EvaState.load(out / "state")
    assert state.steps == 2 and state.extra["domain"] == "rl" and len(state.ranks) == 8
    assert sum(state.ranks.values()) == 2 * len(state.ranks)
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is True and "embed_state" in config["modules_to_save"]
    base = DecisionTransformerModel.from_pretrained(rl_cache / "dt" / "model")
    loaded = PeftModel.from_pretrained(base, str(out / "adapter"))
    modules = dict(loaded.base_model.model.named_modules())
    for name, rank in state.ranks.items():
        if rank:
            torch.testing.assert_close(modules[name].lora_A["default"].weight, state.components(name))


def test_missing_alias_names_the_pretrain_script(
    rl_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path / "empty"))
    data = rl_cache / DATASETS_CACHE / "walker2d.json"
    result = eva("fit", "dt-halfcheetah", str(data), "--domain", "rl", "--out", str(tmp_path / "o"), domains=True)
    assert_one_line_error(result, "dt-halfcheetah", "benchmarks/pretrain_rl.py")


def test_minari_dataset_paths_and_data_errors(
    minari_folder: Path, cheetah_episodes: list[Trajectory], tmp_path: Path
) -> None:
    """The conftest's minari dataset read by its folder, ``data/`` folder or ``main_data.hdf5``."""
    torch.manual_seed(0)
    model = decision_transformer(STATE_DIM, ACT_DIM, hidden_size=16, layers=1, heads=1, max_ep_len=64)
    model.save_pretrained(tmp_path / "dt")
    loaded = cli.eva_cli_load_model(str(tmp_path / "dt"), "x", {"context": "4"})
    assert loaded is not None and loaded.processor == cli.TrajectoryInput(4)
    folder = minari_folder / "test" / "cheetah-v0"
    for data in (folder, folder / "data", folder / "data" / "main_data.hdf5"):
        batches = cli.eva_cli_batches(str(data), loaded, 3, 7, {"seed": "1"})
        assert batches is not None and len(batches) == 3  # type: ignore[arg-type]
        first = next(iter(batches))
        assert first["states"].shape == (3, 4, STATE_DIM) and first["attention_mask"].shape == (3, 4)
    assert isinstance(batches, TrajectoryBatches) and batches.return_scale == 100.0
    np.testing.assert_allclose(batches.stats.mean, StateStats.of(cheetah_episodes).mean)  # the dataset's own
    assert cli.eva_cli_batches(str(tmp_path / "dt" / "config.json"), loaded, 3, 7, {}) is None
    small = decision_transformer(STATE_DIM, ACT_DIM, hidden_size=16, layers=1, max_ep_len=8)
    short = LoadedModel(small, loaded.processor)
    with pytest.raises(TrajectoryError, match="max_ep_len=8"):
        cli.eva_cli_batches(str(folder), short, 3, 7, {})
    other = LoadedModel(decision_transformer(5, ACT_DIM, hidden_size=16, layers=1), loaded.processor)
    with pytest.raises(TrajectoryError, match="states of 17"):
        cli.eva_cli_batches(str(folder), other, 3, 7, {})
    with pytest.raises(eva_core.InvalidConfigError, match="context='0'"):
        cli.eva_cli_batches(str(folder), loaded, 3, 7, {"context": "0"})
