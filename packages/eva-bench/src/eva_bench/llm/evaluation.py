"""Held-out evaluation of a causal LM on question/answer problems: answer-token loss and exact match.

The loss is the next-token cross-entropy on answer tokens only (labels != -100), averaged over those
tokens. Exact match generates an answer greedily for each problem and compares its final number with
the reference's (:func:`eva_bench.llm.data.final_number`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from eva_core.errors import EmptyDataError
from eva_llm import QAProblem
from eva_llm.batches import IGNORE_INDEX, prompt_text, resolve_template

from .data import final_number, same_number

__all__ = ["answer_loss", "exact_match", "generate_answers", "held_out_loss"]

_PLAIN_NEXT_QUESTION = "\nQuestion:"


def _answer_nll(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed next-token NLL over answer tokens, their count) of one batch of (B, T) tensors."""
    device = next(model.parameters()).device
    input_ids = batch["input_ids"].to(device)
    attention = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device).masked_fill(attention == 0, IGNORE_INDEX)
    logits = model(input_ids=input_ids, attention_mask=attention).logits  # (B, T, V)
    targets = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),  # (B*(T-1), V)
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((targets != IGNORE_INDEX).sum().item())


def answer_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens of ``batch`` (the training loss)."""
    total, count = _answer_nll(model, batch)
    return total / max(count, 1)


@torch.no_grad()
def held_out_loss(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """Answer-token cross-entropy over all of ``batches``, weighted by token (not by batch)."""
    total, count = 0.0, 0
    for batch in batches:
        loss, tokens = _answer_nll(model, batch)
        total += float(loss.item())
        count += tokens
    if count == 0:
        raise EmptyDataError(
            "held_out_loss(batches=...) holds no answer token (labels != -100); pass labelled batches (qa_loader)."
        )
    return total / count


@torch.no_grad()
def generate_answers(
    model: nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    template: str = "auto",
    max_new_tokens: int = 256,
    batch_size: int = 8,
) -> list[str]:
    """Greedy completions of ``questions`` (prompts left-padded in batches of ``batch_size``)."""
    from transformers import GenerationConfig

    plain = resolve_template(tokenizer, template) == "plain"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id
    )
    device = next(model.parameters()).device
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        prompts = [prompt_text(tokenizer, q, template) for q in questions[start : start + batch_size]]
        encoded = [tokenizer(p, add_special_tokens=plain).input_ids for p in prompts]
        # Left-padded here, not with tokenizer(..., padding=True): that needs tokenizer.pad_token, which a
        # tokenizer may lack (its EOS token pads then, as in eva_llm.QACollator).
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)  # (B, T), left-padded
        attention = torch.zeros((len(encoded), width), dtype=torch.long)  # (B, T)
        for row, ids in enumerate(encoded):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        output = model.generate(  # type: ignore[operator]
            input_ids=input_ids.to(device), attention_mask=attention.to(device), generation_config=config
        )
        for row in output[:, width:]:  # (B, new tokens)
            text = tokenizer.decode(row, skip_special_tokens=True)
            answers.append(text.split(_PLAIN_NEXT_QUESTION)[0] if plain else text)
    return answers


def exact_match(
    model: nn.Module,
    tokenizer: Any,
    problems: Sequence[QAProblem],
    *,
    template: str = "auto",
    max_new_tokens: int = 256,
    batch_size: int = 8,
) -> float:
    """The share of ``problems`` whose greedily generated final number equals the reference's."""
    if not problems:
        raise EmptyDataError("exact_match(problems=[]) has nothing to score; pass at least one problem.")
    answers = generate_answers(
        model,
        tokenizer,
        [p.question for p in problems],
        template=template,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    hits = sum(
        same_number(final_number(answer), final_number(p.answer)) for answer, p in zip(answers, problems, strict=True)
    )
    return hits / len(problems)
