"""End to end on real weights (all-MiniLM-L6-v2) and real sentences (GLUE SST-2)."""

from __future__ import annotations

import copy

import pytest
import torch
from minilm import BLOCK_LINEARS, load_minilm, sentence_batches, sst2_sentences

import eva_core

peft = pytest.importorskip("peft")


@pytest.fixture(scope="module")
def fitted():  # type: ignore[no-untyped-def]
    model, tokenizer = load_minilm()
    model.eval()
    batches = sentence_batches(tokenizer, sst2_sentences(32 * 64), batch_size=32)
    base = copy.deepcopy(model)
    peft_model = eva_core.init(model, batches, rank=4, max_steps=64, target_modules=BLOCK_LINEARS, progress=False)
    return base, peft_model, batches


def test_converges_on_real_data(fitted) -> None:  # type: ignore[no-untyped-def]
    _, peft_model, _ = fitted
    state = peft_model.eva_state
    assert len(state.ranks) == 36
    assert not state.not_converged, state.not_converged
    assert state.steps < 64
    assert sum(state.ranks.values()) == 4 * 36
    assert max(state.ranks.values()) <= 8
    # real spectra are far from flat: the top component explains much more than the 8th
    ratios = state.layers["encoder.layer.0.intermediate.dense"].explained_variance_ratio
    assert ratios[0] > 3 * ratios[7]
    # q, k and v see one tensor and are measured once
    assert state.layers["encoder.layer.3.attention.self.value"].source == "encoder.layer.3.attention.self.query"


def test_base_weights_identical_and_step0_output_equal(fitted) -> None:  # type: ignore[no-untyped-def]
    base, peft_model, batches = fitted
    inner = peft_model.get_base_model()
    for (name, weight), (_, original) in zip(
        ((n, p) for n, p in inner.named_parameters() if "lora_" not in n), base.named_parameters(), strict=True
    ):
        assert torch.equal(weight, original), name
    with torch.no_grad():
        expected = base(**batches[-1]).last_hidden_state
        actual = peft_model(**batches[-1]).last_hidden_state
    assert torch.equal(actual, expected)


def test_saved_adapter_loads_with_plain_peft(fitted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base, peft_model, batches = fitted
    # make the adapter non-trivial so identical outputs mean the weights really travelled
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.01)
    peft_model.save_pretrained(tmp_path)
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path)
    with torch.no_grad():
        expected = peft_model(**batches[0]).last_hidden_state
        actual = reloaded(**batches[0]).last_hidden_state
        plain = base(**batches[0]).last_hidden_state
    assert torch.equal(actual, expected)
    assert not torch.allclose(actual, plain)
    ranks = {
        n: m.lora_A["default"].weight.shape[0]
        for n, m in reloaded.get_base_model().named_modules()
        if hasattr(m, "lora_A")
    }
    assert ranks == {n: r for n, r in peft_model.eva_state.ranks.items() if r > 0}
