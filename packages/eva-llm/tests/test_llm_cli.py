"""``eva-lora fit`` for causal LMs: loading a model folder, reading question/answer JSON lines (through
``datasets``), and the plugin's defaults on the command line as in Python."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import gsm8k_file

from eva_core import LoadedModel
from eva_core.errors import InvalidConfigError, MissingDataError, UnreadableDataError
from eva_core.testing import run_cli
from eva_llm import QAProblem, cli, read_problems


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, saved as a transformers folder."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    tf.LlamaForCausalLM(config).save_pretrained(folder)
    smollm2_tokenizer.save_pretrained(folder)
    return folder


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_real_problems(problems: list[QAProblem]) -> None:
    assert len(problems) == 40
    assert problems[0].question.startswith("Natalia sold clips")
    assert problems[0].answer.endswith("#### 72")
    assert read_problems(gsm8k_file(), count=3) == problems[:3]


def test_unreadable_files_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"absent\.jsonl"):
        read_problems(tmp_path / "absent.jsonl")
    with pytest.raises(UnreadableDataError, match="JSON object"):
        read_problems(_jsonl(tmp_path / "broken.jsonl", ['{"question": "a", "answer": "b"}', "not json"]))
    with pytest.raises(UnreadableDataError, match=r"fields \['question', 'reply'\]"):
        read_problems(_jsonl(tmp_path / "fields.jsonl", ['{"question": "a", "reply": "b"}']))
    no_answer = ['{"question": "a", "answer": "b"}', '{"question": "c"}']
    with pytest.raises(UnreadableDataError, match="row 2 has no string 'question' and 'answer'"):
        read_problems(_jsonl(tmp_path / "missing.jsonl", no_answer))


def test_loads_causal_lm_folders_without_a_lora_config(tiny_folder: Path, tmp_path: Path) -> None:
    loaded = cli.load_model(str(tiny_folder))
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and not loaded.model.training
    assert loaded.processor.pad_token is not None
    assert loaded.lora_config is None  # the plugin's eva_lora_fields decide, as in Python
    assert cli.load_model(str(tmp_path)) is None  # no config.json
    assert cli.load_model("minilm") is None


def test_batches_read_jsonl_files_only(tiny_folder: Path, smollm2_tokenizer: Any, tmp_path: Path) -> None:
    loaded = LoadedModel(model=torch.nn.Linear(1, 1), processor=smollm2_tokenizer)
    data = str(gsm8k_file())
    batches = list(cli.batches(data, loaded, 4, 8, {"max_length": "128", "template": "plain"}) or [])
    assert len(batches) == 2 and batches[0]["input_ids"].shape[0] == 4
    assert batches[0]["input_ids"].shape[1] <= 128
    assert cli.batches(str(tmp_path / "train.tsv"), loaded, 4, 8, {}) is None
    with pytest.raises(InvalidConfigError, match="max_length='long'"):
        cli.batches(data, loaded, 4, 8, {"max_length": "long"})


def test_eva_fit_takes_the_domain_defaults(tiny_folder: Path, problems: list[QAProblem], tmp_path: Path) -> None:
    lines = [json.dumps({"question": p.question, "answer": p.answer}) for p in problems[:8]]
    data = _jsonl(tmp_path / "train.jsonl", lines)
    out = tmp_path / "fit"
    result = run_cli(
        "fit", str(tiny_folder), str(data), "--domain", "llm", "--out", str(out), "--batch-size", "4",
        "--max-batches", "2", "--no-progress", domains=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    state = json.loads((out / "state" / "eva_state.json").read_text())
    assert (state["config"]["rank"], state["config"]["rho"], state["config"]["tau"]) == (16, 2.0, 0.99)
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and adapter["r"] == 16 and not adapter["fan_in_fan_out"]
