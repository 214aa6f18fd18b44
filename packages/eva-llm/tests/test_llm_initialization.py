"""``eva_llm.init`` and the plugin's defaults: stated once, the same through ``eva_core.init`` and the CLI."""

from __future__ import annotations

import pytest
import torch
from llm_models import tiny_causal_lm, token_batches
from peft import LoraConfig

import eva_core
import eva_llm
from eva_core import EvaConfig
from eva_core.errors import InvalidConfigError
from eva_llm import plugin
from eva_llm.architectures import target_modules


@pytest.fixture
def manager() -> eva_core.PluginManager:
    manager = eva_core.plugin_manager(load_entry_points=False)
    manager.register(plugin, "llm")
    return manager


def test_defaults_are_the_llm_settings(manager: eva_core.PluginManager) -> None:
    hooks = manager.for_model(tiny_causal_lm("llama"))
    assert hooks.domain == "llm"
    config = hooks.config(tiny_causal_lm("llama"), None, {})
    assert (config.rank, config.rho, config.tau) == (16, 2.0, 0.99)


def test_overrides_win_and_only_block_layers_are_adapted(manager: eva_core.PluginManager) -> None:
    model = tiny_causal_lm("llama")
    targets = target_modules(model)
    peft_model = eva_llm.init(
        model, token_batches(3), rank=3, rho=1.0, tau=0.0, max_steps=3, progress=False, plugins=manager
    )
    state = peft_model.eva_state
    assert (state.config.rank, state.config.rho, state.config.tau, state.config.domain) == (3, 1.0, 0.0, "llm")
    assert list(state.ranks) == targets
    assert state.extra["domain"] == "llm"
    assert peft_model.peft_config["default"].task_type == "CAUSAL_LM"
    with pytest.raises(InvalidConfigError, match="rho"):
        eva_llm.init(tiny_causal_lm("llama"), token_batches(2), rho=0.5, plugins=manager)


def test_an_explicit_config_is_used_as_given(manager: eva_core.PluginManager) -> None:
    config = EvaConfig(rank=2, rho=1.0, tau=0.0, max_steps=2, progress=False)  # not the domain's rank 16
    state = eva_llm.init(tiny_causal_lm("llama"), token_batches(2), config=config, plugins=manager).eva_state
    assert state.config == config.replace(domain="llm")
    state = eva_llm.init(tiny_causal_lm("llama"), token_batches(2), config=config, rank=3, plugins=manager).eva_state
    assert state.config.rank == 3


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_eva_core_init_gives_what_eva_llm_init_gives(manager: eva_core.PluginManager, kind: str) -> None:
    settings = {"tau": 0.0, "max_steps": 3, "progress": False, "rank": 2}
    ours = eva_llm.init(tiny_causal_lm(kind), token_batches(3), plugins=manager, **settings)
    core = eva_core.init(tiny_causal_lm(kind), token_batches(3), plugins=manager, **settings)
    assert core.eva_state.extra["domain"] == "llm"  # claimed by the llm plugin; eva_llm.init names it
    assert ours.eva_state.config == core.eva_state.config.replace(domain="llm")
    assert ours.eva_state.ranks == core.eva_state.ranks
    assert ours.peft_config["default"] == core.peft_config["default"]
    ours_weights, core_weights = ours.state_dict(), core.state_dict()
    assert ours_weights.keys() == core_weights.keys()
    assert all(torch.equal(ours_weights[k], core_weights[k]) for k in ours_weights)


def test_lora_fields_turn_fan_in_fan_out_on_for_conv1d_only() -> None:
    gpt2, llama = tiny_causal_lm("gpt2"), tiny_causal_lm("llama")
    assert plugin.eva_lora_fields(gpt2, target_modules(gpt2)) == {"task_type": "CAUSAL_LM", "fan_in_fan_out": True}
    assert plugin.eva_lora_fields(llama, target_modules(llama)) == {"task_type": "CAUSAL_LM"}
    assert plugin.eva_lora_fields(gpt2, ["lm_head"]) == {"task_type": "CAUSAL_LM"}


def test_a_users_lora_config_gets_fan_in_fan_out_on_conv1d(manager: eva_core.PluginManager) -> None:
    settings = {"rank": 2, "tau": 0.0, "max_steps": 2, "progress": False, "plugins": manager}
    lora_config = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.1)
    config = eva_llm.init(tiny_causal_lm("gpt2"), token_batches(2), lora_config=lora_config, **settings).peft_config
    assert config["default"].fan_in_fan_out and config["default"].lora_dropout == 0.1
    assert config["default"].task_type is None  # the user's config otherwise as given
