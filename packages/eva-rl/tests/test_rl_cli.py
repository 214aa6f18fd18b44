"""``eva-lora fit`` driven as a user would on a tiny Decision Transformer folder and a tiny Walker2d-v5 task
dataset in a tmp eva cache, through eva-rl's command-line hooks; minari folders, task records, data errors
and a missing minari in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rl_data import JAX_MUJOCO_OPENGL, python_without, random_policy, record_minari, tiny_decision_transformer

import eva_core
import eva_core.errors
from eva_core import LoadedModel
from eva_core.testing import assert_one_line_error
from eva_core.testing import run_cli as eva
from eva_rl import MissingExtraError, MissingPretrainingError, StateStats, Trajectory, TrajectoryError, cli
from eva_rl.batches import TrajectoryBatches

WALKER = {"dataset_id": "eva/walker2d-ars-v0", "return_scale": 50.0}
"""The settings of the ``walker2d`` record eva-rl reads (the harness writes more)."""


@pytest.fixture(scope="module")
def rl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp eva cache holding the ``walker2d`` task's dataset (4 random-policy episodes of at most 30
    steps, recorded under the task's minari id with its record) and a tiny DT saved as ``dt/model`` with a
    ``pretrain.json`` naming context K = 5."""
    cache = tmp_path_factory.mktemp("cache")
    datasets = cache / cli.DATASETS_CACHE
    record_minari("Walker2d-v5", random_policy(), 4, WALKER["dataset_id"], root=datasets, max_episode_steps=30)
    (datasets / "walker2d.json").write_text(json.dumps({"settings": WALKER}))
    tiny_decision_transformer().save_pretrained(cache / "dt" / "model")
    (cache / "dt" / "pretrain.json").write_text(json.dumps({"settings": {"context": 5}}))
    return cache


@pytest.fixture(scope="module")
def dt_run(rl_cache: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``eva-lora fit <dt folder> walker2d`` (the task alias; its dataset is in the cache): 2 batches of 8
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
    data = rl_cache / cli.DATASETS_CACHE / "walker2d.json"
    result = eva("fit", "dt-halfcheetah", str(data), "--domain", "rl", "--out", str(tmp_path / "o"), domains=True)
    assert_one_line_error(result, "dt-halfcheetah", "benchmarks/pretrain_rl.py")


def test_task_alias_and_record_read_the_cached_dataset(
    rl_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = LoadedModel(tiny_decision_transformer(), cli.TrajectoryInput(5))
    record = rl_cache / cli.DATASETS_CACHE / "walker2d.json"
    monkeypatch.setenv("EVA_CACHE_DIR", str(rl_cache))
    by_alias = cli.eva_cli_batches("walker2d", loaded, 4, None, {})
    monkeypatch.setenv("EVA_CACHE_DIR", str(tmp_path))  # a record is read where it lies
    by_record = cli.eva_cli_batches(str(record), loaded, 4, None, {})
    for batches in (by_alias, by_record):
        assert isinstance(batches, TrajectoryBatches) and batches.return_scale == WALKER["return_scale"]
        assert len(batches.episodes) == 4 and batches.context == 5
        assert len(batches) == -(-sum(len(e) for e in batches.episodes) // 4)  # every timestep once, on average
    with pytest.raises(MissingPretrainingError, match=r"pretrain_rl\.py"):
        cli.eva_cli_batches("walker2d", loaded, 4, None, {})  # nothing in this cache


def test_minari_dataset_paths_and_data_errors(
    cheetah_dataset: Path, cheetah_episodes: list[Trajectory], tmp_path: Path
) -> None:
    """The conftest's minari dataset read by its folder, ``data/`` folder or ``main_data.hdf5``."""
    tiny_decision_transformer(hidden_size=16, layers=1, heads=1).save_pretrained(tmp_path / "dt")
    loaded = cli.eva_cli_load_model(str(tmp_path / "dt"), "x", {"context": "4"})
    assert loaded is not None and loaded.processor == cli.TrajectoryInput(4) and loaded.lora_config is None
    for data in (cheetah_dataset, cheetah_dataset / "data", cheetah_dataset / "data" / "main_data.hdf5"):
        batches = cli.eva_cli_batches(str(data), loaded, 3, 7, {"seed": "1"})
        assert batches is not None and len(batches) == 3  # type: ignore[arg-type]
        first = next(iter(batches))
        assert first["states"].shape == (3, 4, 17) and first["attention_mask"].shape == (3, 4)
    assert isinstance(batches, TrajectoryBatches) and batches.return_scale == 100.0
    np.testing.assert_allclose(batches.stats.mean, StateStats.of(cheetah_episodes).mean)  # the dataset's own
    assert cli.eva_cli_batches(str(tmp_path / "dt" / "config.json"), loaded, 3, 7, {}) is None
    short = LoadedModel(tiny_decision_transformer(hidden_size=16, layers=1, max_ep_len=8), loaded.processor)
    with pytest.raises(TrajectoryError, match="max_ep_len=8"):
        cli.eva_cli_batches(str(cheetah_dataset), short, 3, 7, {})
    other = LoadedModel(tiny_decision_transformer(5, hidden_size=16, layers=1), loaded.processor)
    with pytest.raises(TrajectoryError, match="states of 17"):
        cli.eva_cli_batches(str(cheetah_dataset), other, 3, 7, {})
    with pytest.raises(eva_core.errors.InvalidConfigError, match="context='0'"):
        cli.eva_cli_batches(str(cheetah_dataset), loaded, 3, 7, {"context": "0"})


def test_missing_minari_names_the_extra(cheetah_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minari", None)  # `import minari` now raises ImportError
    loaded = LoadedModel(tiny_decision_transformer(), cli.TrajectoryInput(4))
    with pytest.raises(MissingExtraError, match=r"pip install 'eva-rl\[minari\]'"):
        cli.eva_cli_batches(str(cheetah_dataset), loaded, 3, 7, {})


def test_reading_minari_needs_no_jax_mujoco_or_opengl(cheetah_dataset: Path) -> None:
    """The ``minari`` extra reads a dataset in an interpreter where jax, MuJoCo and OpenGL cannot be imported."""
    script = f"""
    from eva_core import LoadedModel
    from transformers import DecisionTransformerConfig, DecisionTransformerModel
    from eva_rl import cli

    model = DecisionTransformerModel(DecisionTransformerConfig(state_dim=17, act_dim=6, hidden_size=16, n_layer=1))
    batches = cli.eva_cli_batches({str(cheetah_dataset)!r}, LoadedModel(model, cli.TrajectoryInput(4)), 3, 7, {{}})
    assert not [name for name in sys.modules if name.partition(".")[0] in BLOCKED]
    print("batches", len(batches), "minari" in sys.modules)
    """
    result = python_without(JAX_MUJOCO_OPENGL, script)
    assert result.returncode == 0, result.stderr
    assert "batches 3 True" in result.stdout
