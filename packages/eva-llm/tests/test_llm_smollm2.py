"""End to end on a real model and real data: SmolLM2-135M-Instruct (GGUF, Llama) on GSM8K problems.

EVA measures the answer tokens only, and the adapter, trained a few steps and saved with peft, reloads
with nothing of eva involved to the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

import eva_llm
from eva_llm import QAProblem
from eva_llm.batches import answer_token_count


@dataclass
class Run:
    peft_model: Any
    fit_batches: list[dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def run(smollm2_folder: str, smollm2_tokenizer: Any, problems: list[QAProblem]) -> Run:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = eva_llm.load_causal_lm(smollm2_folder)
    fit_batches = list(eva_llm.qa_loader(smollm2_tokenizer, problems[:12], 4, max_length=192))
    # min_steps = max_steps = 2: every layer sees both batches in full before the fit ends (tau 0 lets it
    # end there without a not-converged warning), so its row count is exactly known.
    peft_model = eva_llm.init(model, fit_batches, rank=4, max_steps=2, min_steps=2, tau=0.0, progress=False)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    peft_model.train()
    for batch in fit_batches[:2]:  # a few plain steps on transformers' own loss (labels -100 are skipped)
        peft_model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return Run(peft_model.eval(), fit_batches)


def test_eva_rows_are_the_answer_tokens(run: Run) -> None:
    state = run.peft_model.eva_state
    assert state.steps == 2
    answer_tokens = sum(answer_token_count(batch) for batch in run.fit_batches[: state.steps])
    all_tokens = sum(int(batch["attention_mask"].sum()) for batch in run.fit_batches[: state.steps])
    assert 0 < answer_tokens < all_tokens
    assert len(state.layers) == 30 * 7
    assert {layer.rows for layer in state.layers.values()} == {answer_tokens}
    assert sum(state.ranks.values()) == 4 * 30 * 7
    assert not any("lm_head" in name or "embed" in name for name in state.ranks)


def test_saved_adapter_reloads_with_plain_peft(run: Run, smollm2_folder: str, tmp_path: Path) -> None:
    assert any(torch.count_nonzero(p) for n, p in run.peft_model.named_parameters() if "lora_B" in n)  # trained
    run.peft_model.save_pretrained(tmp_path)
    base, _ = eva_llm.load_causal_lm(smollm2_folder)
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    batch = run.fit_batches[-1]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        expected = run.peft_model(**inputs).logits
        got = reloaded(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
