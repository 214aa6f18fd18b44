"""What the scale benchmark (:mod:`eva_bench.engine.scale`) measures: one Llama-2-7B-shaped decoder block fed
random hidden states, and the whole SmolLM2-135M and Gemma-3-270M fed real GSM8K problems.

The block is transformers' ``LlamaDecoderLayer`` with random weights (seeded, so every subprocess builds the
same one) and its rotary embeddings; its batches are random hidden states (B, T, d), seeded too, with a
power-law spectrum (column j of N(0, 1) entries scaled by ``(j + 1) ** -0.5``, so the j-th variance falls as
1/j): real residual streams are far from isotropic, and on isotropic rows the exact solver's subspace
iteration stalls and falls back to a dense ``eigh`` (9 d^3 FLOPs: minutes at d = 11008). Random inputs and
weights give the same FLOPs and bytes as real ones, so the block measures cost only; the accuracy of a
sketch on it says nothing. Accuracy is measured on the real models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import data

__all__ = [
    "BLOCK_SHAPES",
    "MODELS",
    "DecoderBlock",
    "block_batches",
    "build_block",
    "lm_batches",
    "load_lm",
    "model_config",
]

BLOCK_SHAPES: dict[str, dict[str, int]] = {
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32},
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4, "num_key_value_heads": 4},
}
"""Llama-2-7B's block (d = 4096, MLP 11008, 32 heads, no grouped KV) and a tiny one for smoke tests."""

MODELS: dict[str, str] = {"smollm2": "SmolLM2-135M (GSM8K)", "gemma3": "Gemma-3-270M (GSM8K)"}
"""The real models by key, with their table names."""


class DecoderBlock(nn.Module):
    """One ``LlamaDecoderLayer`` taking (B, T, d) hidden states; positions 0..T-1, causal attention."""

    def __init__(self, config: Any) -> None:
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

        super().__init__()
        self.layer = LlamaDecoderLayer(config, layer_idx=0)
        self.rotary = LlamaRotaryEmbedding(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d)."""
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None].expand(hidden.shape[0], -1)
        cos, sin = self.rotary(hidden, positions)
        out = self.layer(hidden, position_embeddings=(cos, sin), position_ids=positions)
        return out[0] if isinstance(out, tuple) else out


def build_block(shape: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> DecoderBlock:
    """The decoder block of ``BLOCK_SHAPES[shape]`` with seeded random weights, in eval mode."""
    from transformers import LlamaConfig

    config = LlamaConfig(**BLOCK_SHAPES[shape])
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return DecoderBlock(config).to(device=device, dtype=dtype).eval()


def block_batches(
    shape: str, count: int, size: int, tokens: int, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> list[torch.Tensor]:
    """``count`` batches of (``size``, ``tokens``, d) N(0, 1) hidden states, the same on every call."""
    generator = torch.Generator().manual_seed(1)
    width = BLOCK_SHAPES[shape]["hidden_size"]
    return [torch.randn(size, tokens, width, generator=generator).to(device=device, dtype=dtype) for _ in range(count)]


def _checkpoint(key: str) -> Any:
    from eva_llm import gemma3_270m_checkpoint, smollm2_checkpoint

    return smollm2_checkpoint() if key == "smollm2" else gemma3_270m_checkpoint()


def model_config(key: str) -> dict[str, Any]:
    """The transformers config of model ``key`` as a dict (``AutoConfig.for_model(**it)`` rebuilds it): what a
    scale record keeps, so the planner can be checked against it without the model's package."""
    from transformers import AutoConfig

    return dict(AutoConfig.from_pretrained(str(_checkpoint(key))).to_diff_dict())


def load_lm(key: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    """SmolLM2-135M-Instruct or Gemma-3-270M (base), from the offline packages, in eval mode."""
    from eva_llm import load_causal_lm

    model, _ = load_causal_lm(_checkpoint(key), dtype=dtype)
    return model.to(device)


def lm_batches(key: str, count: int, size: int = 8, max_length: int = 256) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of ``size`` GSM8K training problems (question and worked answer; the first
    ``count * size`` of the file), tokenized by model ``key``'s tokenizer, right-padded per batch, cut at
    ``max_length`` tokens: ``input_ids`` and ``attention_mask`` (every real token is measured)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_checkpoint(key)))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = data.gsm8k_texts(count * size)
    out = []
    for start in range(0, count * size, size):
        encoded = tokenizer(
            texts[start : start + size], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        out.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    return out
