"""End to end on a real model and real data: SmolLM2-135M-Instruct (GGUF, Llama) on GSM8K problems.

EVA measures the answer tokens only, a few training steps lower the held-out answer loss, and the
adapter saved with peft reloads, with nothing of eva involved, to the same logits.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel

import eva_core
import eva_llm
from eva_llm.evaluation import answer_loss, held_out_loss


@dataclass
class Run:
    peft_model: Any
    fit_batches: list[dict[str, torch.Tensor]]
    eval_batches: list[dict[str, torch.Tensor]]
    curve: tuple[eva_core.EvalPoint, ...]


@pytest.fixture(scope="module")
def run(smollm2_folder: str, smollm2_tokenizer: Any) -> Run:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, _ = eva_llm.load_causal_lm(smollm2_folder)
    train_problems = eva_llm.read_gsm8k(count=12)
    fit_batches = list(eva_llm.qa_loader(smollm2_tokenizer, train_problems, 4, max_length=192))
    eval_batches = list(eva_llm.qa_loader(smollm2_tokenizer, eva_llm.read_gsm8k(start=-4), 4, max_length=256))
    # min_steps = max_steps = 2: every layer sees both batches in full before the fit ends (tau 0 lets it
    # end there without a not-converged warning), so its row count is exactly known.
    peft_model = eva_llm.init(model, fit_batches, rank=4, max_steps=2, min_steps=2, tau=0.0, progress=False)
    curve = eva_core.train(
        peft_model,
        itertools.cycle(fit_batches),
        answer_loss,
        lambda adapted: {"loss": held_out_loss(adapted, eval_batches)},
        steps=4,
        eval_at=(0, 4),
        lr=2e-3,
    )
    return Run(peft_model, fit_batches, eval_batches, curve)


def test_eva_rows_are_the_answer_tokens(run: Run) -> None:
    state = run.peft_model.eva_state
    assert state.steps == 2
    answer_tokens = sum(eva_llm.answer_token_count(batch) for batch in run.fit_batches[: state.steps])
    all_tokens = sum(int(batch["attention_mask"].sum()) for batch in run.fit_batches[: state.steps])
    assert 0 < answer_tokens < all_tokens
    assert len(state.layers) == 30 * 7
    assert {layer.rows for layer in state.layers.values()} == {answer_tokens}
    assert sum(state.ranks.values()) == 4 * 30 * 7
    assert not any("lm_head" in name or "embed" in name for name in state.ranks)


def test_training_lowers_the_held_out_answer_loss(run: Run) -> None:
    before, after = (point.metrics["loss"] for point in run.curve)
    assert after < before


def test_saved_adapter_reloads_with_plain_peft(run: Run, smollm2_folder: str, tmp_path: Path) -> None:
    run.peft_model.save_pretrained(tmp_path)
    base, _ = eva_llm.load_causal_lm(smollm2_folder)
    reloaded = PeftModel.from_pretrained(base, tmp_path).eval()
    batch = run.eval_batches[0]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    run.peft_model.eval()
    with torch.no_grad():
        expected = run.peft_model(**inputs).logits
        got = reloaded(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
