"""The llm fine-tuning recipe on real GSM8K problems, with a tiny random Llama behind the SmolLM2 tokenizer,
and the comparison runner that calls it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from peft import LoraConfig

import eva_llm
from eva_bench import RunRecord
from eva_bench.comparison import parse
from eva_bench.llm import run_from_args
from eva_bench.llm.recipe import finetune
from eva_core.errors import InvalidConfigError


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    return tf.AutoTokenizer.from_pretrained(eva_llm.smollm2_checkpoint())


def _tiny_llama(vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return tf.LlamaForCausalLM(config).eval()


def _tiny_gpt2(vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = tf.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=512)
    return tf.GPT2LMHeadModel(config).eval()


SMALL: dict[str, Any] = {
    "steps": 2,
    "rank": 2,
    "lr": 1e-3,
    "batch_size": 4,
    "train_problems": 8,
    "eval_problems": 4,
    "generate_problems": 2,
    "max_new_tokens": 4,
    "max_length": 256,
    "eva_overrides": {"max_steps": 2, "tau": 0.0},
}


@pytest.mark.parametrize("method", ["eva", "lora"])
def test_finetune_records_the_run(smollm2_tokenizer: Any, method: str) -> None:
    model = _tiny_llama(len(smollm2_tokenizer))
    record = finetune(model, tokenizer=smollm2_tokenizer, method=method, eval_at=(0, 1, 2), **SMALL)
    assert isinstance(record, RunRecord)
    assert record.method == method and record.metric == "exact_match"
    assert [point.step for point in record.curve] == [0, 1, 2]
    assert all(set(point.metrics) == {"loss", "exact_match"} for point in record.curve)
    assert 0.0 <= record.final() <= 1.0
    assert record.final("loss") > 0 and record.init_seconds > 0 and record.trainable_parameters > 0
    assert ("ranks" in record.extra) == (method == "eva")
    assert record.extra["train_problems"] == 8 and record.extra["generate_problems"] == 2
    if method == "eva":
        assert sum(record.extra["ranks"].values()) == 2 * 14
        assert max(record.extra["ranks"].values()) <= 2 * 2  # the plugin's rho = 2


def test_loss_metric_generates_at_the_last_evaluation_only(smollm2_tokenizer: Any) -> None:
    model = _tiny_llama(len(smollm2_tokenizer))
    record = finetune(model, tokenizer=smollm2_tokenizer, method="lora", metric="loss", eval_at=(0, 1, 2), **SMALL)
    assert [set(point.metrics) for point in record.curve] == [{"loss"}, {"loss"}, {"loss", "exact_match"}]


def test_conv1d_targets_get_fan_in_fan_out(smollm2_tokenizer: Any) -> None:
    model = _tiny_gpt2(len(smollm2_tokenizer))
    lora_config = LoraConfig(r=2, lora_alpha=2, lora_dropout=0.0)
    finetune(model, tokenizer=smollm2_tokenizer, method="lora", metric="loss", lora_config=lora_config, **SMALL)
    assert model.peft_config["default"].fan_in_fan_out


def test_finetune_rejects_bad_arguments(smollm2_tokenizer: Any) -> None:
    model = _tiny_llama(len(smollm2_tokenizer))
    with pytest.raises(InvalidConfigError, match="metric='accuracy'"):
        finetune(model, tokenizer=smollm2_tokenizer, metric="accuracy")
    with pytest.raises(InvalidConfigError, match="generate_problems=0"):
        finetune(model, tokenizer=smollm2_tokenizer, generate_problems=0)
    with pytest.raises(InvalidConfigError, match="tokenizer"):
        finetune(model)
    with pytest.raises(InvalidConfigError, match="train_problems=9000"):
        finetune(model, tokenizer=smollm2_tokenizer, train_problems=9000, metric="loss")


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")  # 2 batches at the default tau
def test_the_comparison_runs_a_model_folder(smollm2_tokenizer: Any, tmp_path: Path) -> None:
    _tiny_llama(len(smollm2_tokenizer)).save_pretrained(tmp_path)
    smollm2_tokenizer.save_pretrained(tmp_path)
    small = "--steps 1 --rank 2 --batch-size 4 --train-limit 8 --dev-limit 4 --generate-limit 1 --max-new-tokens 2"
    args = parse(["llm", "--model", str(tmp_path), *small.split(), "--eva-max-batches", "2", "--out", str(tmp_path)])
    record = run_from_args(args, "eva", 0)
    assert record.metric == "loss" and [point.step for point in record.curve] == [0, 1]
    assert set(record.curve[-1].metrics) == {"loss", "exact_match"}
    assert record.extra["eva_batches"] <= 2


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")
def test_validation_split_held_out_once_and_training_paired_across_methods(
    smollm2_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The problems just before the held-out ones are the validation curve's; the held-out ones are scored
    (loss and exact match) once, after the last step, and never trained on. Paired seeds: EVA's pass over
    the training data must not move the training order away from LoRA's."""
    from eva_bench.llm import recipe
    from eva_bench.llm.data import read_gsm8k

    loaded: list[list[str]] = []
    original_loader, original_loss = recipe.qa_loader, recipe.answer_loss

    def loader_spy(tokenizer: Any, problems: Any, *args: Any, **kwargs: Any) -> Any:
        loaded.append([problem.question for problem in problems])
        return original_loader(tokenizer, problems, *args, **kwargs)

    def loss_spy(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if model.training:
            seen[method].append(batch["input_ids"][:, 0:48].sum(dim=1).tolist())
        return original_loss(model, batch)

    monkeypatch.setattr(recipe, "qa_loader", loader_spy)
    monkeypatch.setattr(recipe, "answer_loss", loss_spy)
    seen: dict[str, list[list[int]]] = {}
    records = {}
    for method in ("lora", "eva"):
        seen[method] = []
        model = _tiny_llama(len(smollm2_tokenizer))
        records[method] = finetune(
            model, tokenizer=smollm2_tokenizer, method=method, metric="loss", eval_at=(0, 2), validation=3, **SMALL
        )
    questions = [p.question for p in read_gsm8k()]
    assert questions[:8] in loaded and questions[-7:-4] in loaded and questions[-4:] in loaded
    lora = records["lora"]
    assert lora.extra["validation_problems"] == 3 and lora.extra["eval_problems"] == 4
    assert [set(point.metrics) for point in lora.curve] == [{"loss"}, {"loss"}]
    assert lora.held_out is not None and set(lora.held_out) == {"loss", "exact_match"}
    assert len(seen["lora"]) == 2 and seen["eva"] == seen["lora"]


def test_problems_whose_prompt_does_not_fit_are_skipped_not_batched() -> None:
    """With one problem a step, a prompt longer than ``max_length`` would make an empty batch: such problems
    are skipped when the splits are drawn, and the counts still hold."""
    from eva_bench.llm.data import read_gsm8k
    from eva_bench.llm.recipe import _split

    problems = read_gsm8k()
    too_long = {problems[1].question, problems[-2].question}
    train, held_out = _split(None, 3, 2, lambda problem: problem.question not in too_long)
    assert train == [problems[0], problems[2], problems[3]] and held_out == [problems[-3], problems[-1]]
    with pytest.raises(InvalidConfigError, match="too few problems fit max_length"):
        _split(None, 3, 2, lambda problem: False)
