"""Tiny random causal LMs and token batches for the unit tests of mechanics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

KINDS = ("llama", "qwen2", "mistral", "gemma3_text", "gpt2")


def tiny_causal_lm(kind: str) -> nn.Module:
    """A tiny random causal LM of architecture ``kind`` (vocab 128, 2 blocks, width 32)."""
    import transformers as tf

    torch.manual_seed(0)
    shared: dict[str, Any] = {
        "vocab_size": 128,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    }
    if kind == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**shared)).eval()
    if kind == "qwen2":
        return tf.Qwen2ForCausalLM(tf.Qwen2Config(**shared)).eval()
    if kind == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**shared)).eval()
    if kind == "gemma3_text":
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**shared, head_dim=8)).eval()
    if kind == "gpt2":
        config = tf.GPT2Config(
            vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0
        )
        return tf.GPT2LMHeadModel(config).eval()
    raise ValueError(f"unknown tiny model kind {kind!r}")


def token_batches(count: int, batch: int = 3, length: int = 10, vocab: int = 128) -> list[dict[str, torch.Tensor]]:
    """Random right-padded batches whose first half of each row is a prompt (labels -100)."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        input_ids = torch.randint(0, vocab, (batch, length), generator=generator)  # (B, T)
        attention = torch.ones(batch, length, dtype=torch.long)
        attention[0, length - 3 :] = 0  # one padded row
        labels = input_ids.masked_fill(attention == 0, -100)
        labels[:, : length // 2] = -100
        out.append({"input_ids": input_ids, "attention_mask": attention, "labels": labels})
    return out
