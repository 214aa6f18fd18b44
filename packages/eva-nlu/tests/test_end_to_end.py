"""EVA on real all-MiniLM-L6-v2 weights and real GLUE sentences: init, train, save, reload with plain peft."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from torch import nn

import eva_core
import eva_nlu


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")  # six batches are fewer than EVA asks for
def test_eva_init_train_save_and_reload_with_plain_peft(
    minilm_sst2: tuple[nn.Module, Any], sst2_batches: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    base = copy.deepcopy(minilm_sst2[0])
    pristine = copy.deepcopy(base)
    torch.manual_seed(0)
    peft_model = eva_nlu.init(base, sst2_batches, rank=4, progress=False)
    state = peft_model.eva_state
    assert len(state.ranks) == 36 and sum(state.ranks.values()) == 4 * 36
    # Rows are the non-padding tokens of the batches a layer saw: layers stop at convergence and reopen
    # when their allocation grows, so each layer's rows are a sum over some subset of the batches.
    tokens = [int(batch["attention_mask"].sum()) for batch in sst2_batches[: state.steps]]
    subset_sums = {sum(itertools.compress(tokens, pick)) for pick in itertools.product((0, 1), repeat=len(tokens))}
    assert all(layer.rows in subset_sums for layer in state.layers.values())
    assert max(layer.rows for layer in state.layers.values()) == sum(tokens)

    train, held_out = sst2_batches[:5], sst2_batches[5]
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    first = None
    for batch in itertools.islice(itertools.cycle(train), 30):
        loss = peft_model(**batch).loss
        first = first if first is not None else loss.item()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    with torch.no_grad():
        last = torch.stack([peft_model(**batch).loss for batch in train]).mean().item()
        logits = peft_model(**held_out).logits
    assert last < first

    peft_model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(pristine, tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**held_out).logits, logits, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")
def test_eva_core_init_gives_what_eva_nlu_init_gives(
    minilm_sst2: tuple[nn.Module, Any], sst2_batches: list[dict[str, torch.Tensor]]
) -> None:
    """The domain's defaults reach eva_core.init through the plugin: same config, ranks, LoraConfig and A."""
    batches = sst2_batches[:3]
    through_core = eva_core.init(copy.deepcopy(minilm_sst2[0]), batches, progress=False)
    through_nlu = eva_nlu.init(copy.deepcopy(minilm_sst2[0]), batches, progress=False)
    assert through_core.eva_state.extra["domain"] == through_nlu.eva_state.extra["domain"] == "nlu"
    assert through_core.eva_state.config.replace(domain="nlu") == through_nlu.eva_state.config  # chosen vs named
    config = through_nlu.eva_state.config
    assert (config.rank, config.rho, config.tau, config.whiten, config.domain) == (8, 2.0, 0.99, False, "nlu")
    assert through_core.eva_state.ranks == through_nlu.eva_state.ranks
    lora = through_nlu.peft_config["default"]
    assert through_core.peft_config["default"] == lora
    assert lora.task_type == "SEQ_CLS" and "classifier" in lora.modules_to_save  # peft adds its own names
    assert len(set(lora.modules_to_save)) == len(lora.modules_to_save)  # ... it added 'classifier' a second time
    assert lora.lora_alpha == 8 and lora.lora_dropout == 0.0
    core_weights, nlu_weights = through_core.state_dict(), through_nlu.state_dict()
    assert core_weights.keys() == nlu_weights.keys()
    for name in core_weights:
        torch.testing.assert_close(core_weights[name], nlu_weights[name], rtol=0, atol=0, msg=name)
