"""``eva-lora plan`` and ``eva_core.plan`` for causal LMs built from a config alone, on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from llm_models import KINDS, tiny_causal_lm

from eva_core import fit, plan
from eva_core.cli.main import main
from eva_core.testing import run_cli
from eva_llm import cli


@pytest.fixture(scope="module")
def llama_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama config.json (width 64, MLP 3072, 2 blocks) in a folder without weights or tokenizer."""
    import transformers as tf

    config = tf.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=3200, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("llama-config")
    config.save_pretrained(folder)
    return folder / "config.json"


def test_eva_lora_plan_prints_the_plan_of_a_config(llama_config: Path) -> None:
    """No weights, no data: the 3200-wide down-projection input is sketched (its Gram update costs 4.2x the
    sketch's at rank 16, rho 2), the 64-wide inputs are exact."""
    result = run_cli("plan", str(llama_config), "--batch-size", "2", "--seq-len", "8", domains=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"EVA plan of {llama_config} (domain llm) on batches of 2 x 8:"
    assert "| model.layers.0.self_attn.q_proj | 3 | 64 | 16 | exact |" in result.stdout
    assert "| model.layers.1.mlp.down_proj | 1 | 3200 | 16 | sketch |" in result.stdout
    assert "14 layers in 8 measured inputs (6 exact, 2 sketch, 0 counts); domain llm, rank 16" in result.stdout


def test_eva_lora_plan_refuses_a_folder_without_a_causal_lm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    assert main(["plan", str(tmp_path), "--domain", "llm"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"eva-lora: error: MODEL={str(tmp_path)!r}: no eva domain builds it without weights")
    assert "(tried: llm)" in error


def test_a_config_saved_from_its_class_alone_plans(tmp_path: Path) -> None:
    """``LlamaConfig(...).save_pretrained`` writes no ``architectures``: its ``model_type`` says it is causal."""
    import transformers as tf

    tf.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1).save_pretrained(tmp_path)
    assert "architectures" not in json.loads((tmp_path / "config.json").read_text())
    model, _ = cli.example(str(tmp_path / "config.json"), 2, 4)  # type: ignore[misc]
    assert type(model).__name__ == "LlamaForCausalLM"


def test_example_builds_on_the_meta_device(llama_config: Path) -> None:
    model, batch = cli.example(str(llama_config.parent), 3, 7)  # type: ignore[misc]
    assert all(parameter.is_meta for parameter in model.parameters())
    assert batch["input_ids"].shape == (3, 7) and not batch["input_ids"].is_meta
    assert cli.example(str(llama_config.parent / "missing"), 3, 7) is None


@pytest.mark.parametrize("kind", KINDS)
def test_plan_predicts_the_kinds_a_fit_of_each_architecture_uses(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups (q/k/v, gate/up) and kinds as the fit makes them, on the same tiny model; a budget that holds
    two 32-wide Grams: the rest is sketched, in the order the forward meets the inputs."""
    from eva_core.fitting.costs import StatisticsChooser

    settings = {"rank": 2, "max_steps": 2, "min_steps": 2, "tau": 0.0, "progress": False, "gram_memory_bytes": 16384}
    made: dict[str, str] = {}
    decide = StatisticsChooser.decide

    def recording(self: StatisticsChooser, name: str, dim: int):  # type: ignore[no-untyped-def]
        made[name] = (choice := decide(self, name, dim)).kind
        return choice

    model = tiny_causal_lm(kind)
    ids = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(0))
    predicted = plan(model, {"input_ids": ids}, **settings)
    monkeypatch.setattr(StatisticsChooser, "decide", recording)
    fit(model, [{"input_ids": ids}] * 2, **settings)
    assert predicted.kinds() == made
    assert list(made.values())[:3] == ["exact", "exact", "sketch"]
