"""The fine-tuning recipe on real GSM8K problems, with a tiny random Llama behind the SmolLM2 tokenizer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers as tf

import eva_llm
from eva_core import InvalidConfigError, RunRecord


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


@pytest.mark.parametrize("method", ["eva", "lora"])
def test_finetune_records_the_run(smollm2_tokenizer: Any, method: str) -> None:
    record = eva_llm.finetune(
        _tiny_llama(len(smollm2_tokenizer)),
        tokenizer=smollm2_tokenizer,
        method=method,
        steps=2,
        rank=2,
        eval_at=(0, 1, 2),
        lr=1e-3,
        batch_size=4,
        train_problems=8,
        eval_problems=4,
        generate_problems=2,
        max_new_tokens=4,
        max_length=256,
        eva_overrides={"max_steps": 2, "tau": 0.0},
    )
    assert isinstance(record, RunRecord)
    assert record.method == method and record.metric == "exact_match"
    assert [point.step for point in record.curve] == [0, 1, 2]
    assert all(set(point.metrics) == {"loss", "exact_match"} for point in record.curve)
    assert 0.0 <= record.final() <= 1.0
    assert record.final("loss") > 0 and record.init_seconds > 0 and record.trainable_parameters > 0
    assert ("ranks" in record.extra) == (method == "eva")
    if method == "eva":
        assert sum(record.extra["ranks"].values()) == 2 * 14


def test_finetune_rejects_bad_arguments(smollm2_tokenizer: Any) -> None:
    model = _tiny_llama(len(smollm2_tokenizer))
    with pytest.raises(InvalidConfigError, match="metric='accuracy'"):
        eva_llm.finetune(model, tokenizer=smollm2_tokenizer, metric="accuracy")
    with pytest.raises(InvalidConfigError, match="generate_problems=0"):
        eva_llm.finetune(model, tokenizer=smollm2_tokenizer, generate_problems=0)
    with pytest.raises(InvalidConfigError, match="tokenizer"):
        eva_llm.finetune(model)
    with pytest.raises(InvalidConfigError, match="train_problems=9000"):
        eva_llm.finetune(model, tokenizer=smollm2_tokenizer, train_problems=9000, metric="loss")
