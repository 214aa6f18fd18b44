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
from eva_nlu.recipe import finetune
from eva_nlu.rows import shared_glue_path


@pytest.mark.filterwarnings("ignore::eva_core.NotConvergedWarning")  # six batches are fewer than EVA asks for
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


@pytest.mark.filterwarnings("ignore::eva_core.NotConvergedWarning")
@pytest.mark.parametrize("method", ["eva", "lora", "pissa", "olora"])
def test_the_recipe_runs_every_method_on_real_mrpc_pairs(method: str) -> None:
    record = finetune(
        "minilm",
        "mrpc",
        method,
        train=shared_glue_path("mrpc", "train"),
        dev=shared_glue_path("mrpc", "dev"),
        steps=3,
        eval_at=[0, 3],
        train_limit=64,
        dev_limit=32,
        batch_size=16,
        rank=2,
    )
    assert isinstance(record, eva_core.RunRecord)
    assert record.metric == "f1" and [p.step for p in record.curve] == [0, 3]
    assert set(record.curve[-1].metrics) >= {"f1", "accuracy", "loss"}
    assert 0.0 <= record.final() <= 1.0
    if method == "eva":
        assert set(record.extra) >= {"ranks", "eva_batches"} and sum(record.extra["ranks"].values()) == 2 * 36
    else:
        head = 384 * 2 + 2  # the new classifier, trained in full
        assert record.trainable_parameters == _lora_count(2) + head


def _lora_count(rank: int) -> int:
    """LoRA parameters at rank r on MiniLM's 36 block linears: r * (d_in + d_out) per layer."""
    per_block = 4 * (384 + 384) + (384 + 1536) + (1536 + 384)
    return 6 * rank * per_block
