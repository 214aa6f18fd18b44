"""``eva_llm.init``: this domain's defaults, caller overrides, and the LoRA config per architecture."""

from __future__ import annotations

import pytest
from llm_models import tiny_causal_lm, token_batches
from peft import LoraConfig

import eva_llm
from eva_core import InvalidConfigError
from eva_llm.api import lora_config_for_model


def test_defaults_are_the_llm_settings() -> None:
    defaults = eva_llm.LLM_DEFAULTS
    assert (defaults.rank, defaults.rho, defaults.tau, defaults.domain) == (16, 2.0, 0.99, "llm")


def test_overrides_win_and_only_block_layers_are_adapted() -> None:
    model = tiny_causal_lm("llama")
    targets = eva_llm.target_modules(model)
    peft_model = eva_llm.init(model, token_batches(3), rank=3, rho=1.0, tau=0.0, max_steps=3, progress=False)
    state = peft_model.eva_state
    assert (state.config.rank, state.config.rho, state.config.domain) == (3, 1.0, "llm")
    assert list(state.ranks) == targets
    assert state.extra["domain"] == "llm"
    with pytest.raises(InvalidConfigError, match="rho"):
        eva_llm.init(tiny_causal_lm("llama"), token_batches(2), rho=0.5)


def test_lora_config_turns_fan_in_fan_out_on_for_conv1d_only() -> None:
    gpt2, llama = tiny_causal_lm("gpt2"), tiny_causal_lm("llama")
    assert lora_config_for_model(gpt2, 4).fan_in_fan_out
    assert lora_config_for_model(gpt2, 4, LoraConfig(r=4, lora_dropout=0.1)).fan_in_fan_out
    assert not lora_config_for_model(llama, 4).fan_in_fan_out
    assert not lora_config_for_model(gpt2, 4, targets=["lm_head"]).fan_in_fan_out
    assert lora_config_for_model(llama, 4).task_type == "CAUSAL_LM"
