"""Layer selection, heads and row masking on the real encoder architectures (random weights: mechanics)."""

from __future__ import annotations

import pytest
import torch
from nlu_models import TINY, random_batches, tiny_encoder

import eva_core
import eva_nlu
from eva_core.plugins import DomainHooks, plugin_manager
from eva_nlu import architectures, plugin

BLOCK_LAYERS = {
    "bert": (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "roberta": (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "xlm-roberta": (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "electra": (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "deberta-v2": (
        "attention.self.query_proj",
        "attention.self.key_proj",
        "attention.self.value_proj",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "mpnet": (
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "intermediate.dense",
        "output.dense",
    ),
    "distilbert": (
        "attention.q_lin",
        "attention.k_lin",
        "attention.v_lin",
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
    ),
}
HEADS = {
    "bert": ["classifier"],
    "roberta": ["classifier"],
    "xlm-roberta": ["classifier"],
    "electra": ["classifier"],
    "deberta-v2": ["pooler", "classifier"],
    "mpnet": ["classifier"],
    "distilbert": ["pre_classifier", "classifier"],
}


@pytest.mark.parametrize("model_type", sorted(BLOCK_LAYERS))
def test_targets_are_the_block_linears_only(model_type: str) -> None:
    model = tiny_encoder(model_type)
    targets = architectures.target_modules(model)
    assert len(targets) == 2 * 6
    for index, name in enumerate(targets):
        block, suffix = divmod(index, 6)
        assert name.endswith(f"layer.{block}.{BLOCK_LAYERS[model_type][suffix]}"), name
        assert not any(part in name for part in ("pooler", "embeddings", "classifier")), name
    assert architectures.head_modules(model) == HEADS[model_type]
    assert plugin.eva_claims_model(model)


def test_deberta_unshared_position_projections_are_not_targets() -> None:
    model = tiny_encoder(
        "deberta-v2", relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8, share_att_key=False
    )
    names = [name for name, _ in model.named_modules()]
    assert any(name.endswith("pos_key_proj") for name in names)
    assert not any("pos_" in name for name in architectures.target_modules(model))


def test_decoders_are_not_claimed() -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=32))
    assert not plugin.eva_claims_model(gpt2)
    assert not plugin.eva_claims_model(torch.nn.Linear(2, 2))
    assert not plugin.eva_claims_model(tiny_encoder("bert", is_decoder=True))


def test_the_nlu_domain_is_chosen_for_encoders() -> None:
    assert _hooks(tiny_encoder("roberta")).domain == "nlu"


@pytest.mark.parametrize(
    ("model_type", "changes"),
    [
        ("roberta", {}),
        ("mpnet", {}),
        ("deberta-v2", {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "position_buckets": 8}),
        ("deberta-v2", {"relative_attention": True, "pos_att_type": ["p2c", "c2p"], "share_att_key": False}),
    ],
    ids=["roberta", "mpnet", "deberta-v3-shared-keys", "deberta-v2-unshared"],
)
def test_rows_are_the_non_padding_tokens(model_type: str, changes: dict[str, object]) -> None:
    model = tiny_encoder(model_type, **changes)
    batches = random_batches(3)
    state = eva_core.fit(model, batches, domain="nlu", rank=2, tau=0.0, max_steps=3, min_steps=3, progress=False)
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    assert {layer.rows for layer in state.layers.values()} == {tokens}


def test_a_batch_without_attention_mask_counts_every_token() -> None:
    model = tiny_encoder("deberta-v2", relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8)
    batches = [{"input_ids": batch["input_ids"]} for batch in random_batches(2)]
    state = eva_core.fit(model, batches, domain="nlu", rank=2, tau=0.0, max_steps=2, progress=False)
    assert {layer.rows for layer in state.layers.values()} == {2 * 4 * 10}


def test_init_trains_the_head_in_full_and_keeps_the_output() -> None:
    model = tiny_encoder("electra")
    batch = random_batches(1)[0]
    with torch.no_grad():
        before = model(**batch).logits
    peft_model = eva_nlu.init(model, random_batches(3), rank=2, tau=0.0, progress=False)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("classifier.modules_to_save" in name for name in trainable)
    assert all("lora_" in name or "modules_to_save" in name for name in trainable)
    assert sum(peft_model.eva_state.ranks.values()) == 2 * 12
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batch).logits, before, rtol=0, atol=0)


def test_user_overrides_win_over_the_domain_defaults() -> None:
    peft_model = eva_nlu.init(tiny_encoder("bert"), random_batches(2), rank=3, rho=1.0, tau=0.0, progress=False)
    state = peft_model.eva_state
    assert state.config.rank == 3 and state.config.rho == 1.0
    assert set(state.ranks.values()) == {3}
    assert plugin.DEFAULT_CONFIG["rank"] == 8 and state.config.domain == "nlu"


def _hooks(model: torch.nn.Module) -> DomainHooks:
    manager = plugin_manager(load_entry_points=False)
    manager.register(plugin, "nlu")
    return manager.for_model(model)


def test_the_domain_defaults_are_stated_by_the_plugin() -> None:
    model = tiny_encoder("bert")
    hooks = _hooks(model)
    assert hooks.default_config(model) == {"rank": 8, "rho": 2.0, "whiten": False}
    assert hooks.config(model, None, {"rank": 4}) == eva_core.EvaConfig(rank=4, rho=2.0, whiten=False)


@pytest.mark.parametrize("model_type", ["bert", "deberta-v2", "distilbert"])
def test_lora_fields_train_the_head_in_full(model_type: str) -> None:
    model = tiny_encoder(model_type)
    fields = _hooks(model).lora_fields(model, architectures.target_modules(model))
    assert fields == {"task_type": "SEQ_CLS", "modules_to_save": HEADS[model_type]}


def test_a_bare_encoder_has_no_head_to_save() -> None:
    from transformers import AutoConfig, AutoModel

    model = AutoModel.from_config(AutoConfig.for_model("bert", **TINY))
    assert _hooks(model).lora_fields(model, architectures.target_modules(model)) == {}
    peft_model = eva_nlu.init(model, random_batches(2), rank=2, tau=0.0, progress=False)
    assert peft_model.peft_config["default"].modules_to_save is None
