"""Which models the llm plugin claims and which layers it targets, per architecture."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from llm_models import KINDS, tiny_causal_lm
from torch import nn

from eva_core import EvaConfig
from eva_core.capture.rows import token_rows
from eva_llm import plugin
from eva_llm.architectures import decoder_blocks, is_causal_lm, target_modules, uses_conv1d

PER_BLOCK = {
    "llama": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}
    | {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    "gpt2": {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"},
}


@pytest.mark.parametrize("kind", KINDS)
def test_targets_every_block_projection_and_nothing_else(kind: str) -> None:
    model = tiny_causal_lm(kind)
    targets = target_modules(model)
    prefix, blocks = decoder_blocks(model) or ("", nn.ModuleList())
    expected = PER_BLOCK["gpt2" if kind == "gpt2" else "llama"]
    assert len(blocks) == 2
    for index in range(len(blocks)):
        in_block = {t.removeprefix(f"{prefix}.{index}.") for t in targets if t.startswith(f"{prefix}.{index}.")}
        assert in_block == expected, (kind, index)
    assert len(targets) == len(expected) * len(blocks)
    assert not [t for t in targets if "lm_head" in t or "embed" in t or "wte" in t or "wpe" in t]
    assert plugin.eva_target_modules(model=model, config=EvaConfig()) == targets
    modules = dict(model.named_modules())
    assert all(plugin.eva_layer_rows(name=t, module=modules[t]) is token_rows for t in targets)
    assert uses_conv1d(model) == (kind == "gpt2")


@pytest.mark.parametrize("kind", KINDS)
def test_claims_causal_lms_and_their_base_models(kind: str) -> None:
    model = tiny_causal_lm(kind)
    assert plugin.eva_claims_model(model=model)
    assert is_causal_lm(model.get_decoder())  # the model without its LM head (LlamaModel, GPT2Model)


def test_leaves_encoders_and_decision_transformers_to_other_domains() -> None:
    import transformers as tf

    bert = tf.BertModel(tf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2))
    bert_lm = tf.BertLMHeadModel(
        tf.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, is_decoder=True)
    )
    decision = tf.DecisionTransformerModel(
        tf.DecisionTransformerConfig(state_dim=3, act_dim=2, hidden_size=16, n_layer=1, n_head=2, max_ep_len=8)
    )
    for model in (bert, bert_lm, decision, nn.Linear(4, 4)):
        assert not plugin.eva_claims_model(model=model), type(model).__name__


def test_peft_models_are_not_claimed() -> None:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_causal_lm("llama"), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not is_causal_lm(peft_model)


def test_registered_under_the_eva_entry_point_group() -> None:
    points = {point.name: point.value for point in entry_points(group="eva")}
    assert points.get("llm") == "eva_llm.plugin"
