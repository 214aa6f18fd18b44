"""From question/answer problems to right-padded training batches with prompt tokens masked.

This is what a user of eva-llm calls to feed a causal LM (and EVA) with answer-only labels. A
:class:`QAProblem` becomes a *prompt* (the question, in the tokenizer's chat template or a plain
``"Question: ...\\nAnswer:"``) and a *completion* (the worked answer and the end-of-turn token). Both
are tokenized and joined; ``labels`` copy the completion tokens and hold -100 on the prompt and on the
padding, so the LM loss and EVA's SVD rows both see answer tokens only.

A batch is a dict of (B, T) tensors: ``input_ids`` (right-padded with the pad token),
``attention_mask`` (1 on real tokens) and ``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from eva_core.errors import EmptyDataError, InvalidConfigError, warn

__all__ = [
    "IGNORE_INDEX",
    "QACollator",
    "QAProblem",
    "Template",
    "answer_token_count",
    "encode",
    "prompt_text",
    "qa_loader",
    "resolve_template",
]

IGNORE_INDEX = -100
"""The label of tokens the loss (and EVA) skips: prompt and padding."""

Template = Literal["auto", "chat", "plain"]
_TEMPLATES = ("auto", "chat", "plain")


@dataclass(frozen=True)
class QAProblem:
    """One question and its answer (e.g. a GSM8K worked answer ending in ``#### 72``)."""

    question: str
    answer: str


@dataclass(frozen=True)
class Encoded:
    """One tokenized problem: ``input_ids`` (T,) and ``labels`` (T,), -100 on the prompt."""

    input_ids: list[int]
    labels: list[int]


def resolve_template(tokenizer: Any, template: str) -> Literal["chat", "plain"]:
    """``"chat"`` or ``"plain"``; ``"auto"`` picks chat when the tokenizer has a chat template.

    Raises:
        InvalidConfigError: unknown ``template``, or ``"chat"`` for a tokenizer without a chat template.
    """
    if template not in _TEMPLATES:
        raise InvalidConfigError(f"template={template!r} is not one of {_TEMPLATES}; pick 'auto', 'chat' or 'plain'.")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat:
        raise InvalidConfigError(
            f"template='chat' but {type(tokenizer).__name__} has no chat_template; use template='plain' or 'auto'."
        )
    return "chat" if template == "chat" or (template == "auto" and has_chat) else "plain"


def prompt_text(tokenizer: Any, question: str, template: str = "auto") -> str:
    """The text the model continues to answer ``question`` (ends where the answer starts)."""
    if resolve_template(tokenizer, template) == "chat":
        messages = [{"role": "user", "content": question}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return f"Question: {question}\nAnswer:"


def _completion_text(tokenizer: Any, problem: QAProblem, template: str) -> str:
    """The answer as the model should write it after the prompt, end-of-turn token included."""
    end = tokenizer.eos_token or ""
    if resolve_template(tokenizer, template) == "plain":
        return f" {problem.answer}{end}"
    prompt = prompt_text(tokenizer, problem.question, template)
    messages = [{"role": "user", "content": problem.question}, {"role": "assistant", "content": problem.answer}]
    full = str(tokenizer.apply_chat_template(messages, tokenize=False))
    return full[len(prompt) :] if full.startswith(prompt) else f"{problem.answer}{end}"


def encode(tokenizer: Any, problem: QAProblem, template: str = "auto", max_length: int | None = None) -> Encoded | None:
    """Tokenize one problem; the completion is cut to fit ``max_length`` tokens in all.

    Returns:
        the tokens and labels, or None when the prompt alone leaves no room for an answer token.
    """
    plain = resolve_template(tokenizer, template) == "plain"
    prompt_ids = tokenizer(prompt_text(tokenizer, problem.question, template), add_special_tokens=plain).input_ids
    completion_ids = tokenizer(_completion_text(tokenizer, problem, template), add_special_tokens=False).input_ids
    if max_length is not None:
        completion_ids = completion_ids[: max(0, max_length - len(prompt_ids))]
    if not completion_ids:
        return None
    return Encoded(
        input_ids=[*prompt_ids, *completion_ids],
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(completion_ids),
    )


class QACollator:
    """``collate_fn`` for a ``DataLoader`` of :class:`QAProblem`: tokenizes and right-pads a batch.

    Args:
        tokenizer: a transformers tokenizer with a pad token (or an EOS token, used for padding).
        template: ``"auto"``, ``"chat"`` or ``"plain"`` (see :func:`resolve_template`).
        max_length: the most tokens per example (prompt and answer); None keeps everything.

    Returns (on call):
        ``{"input_ids", "attention_mask", "labels"}``, each (B, T) int64.
    """

    def __init__(self, tokenizer: Any, template: str = "auto", max_length: int | None = 512) -> None:
        resolve_template(tokenizer, template)
        if max_length is not None and (isinstance(max_length, bool) or max_length < 2):
            raise InvalidConfigError(f"max_length={max_length!r} must be None or an integer >= 2, e.g. 512.")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is None:
            raise InvalidConfigError(
                f"{type(tokenizer).__name__} has neither a pad nor an EOS token; set tokenizer.pad_token first."
            )
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.pad_id = int(pad)

    def __call__(self, problems: Sequence[QAProblem]) -> dict[str, torch.Tensor]:
        encoded = [encode(self.tokenizer, p, self.template, self.max_length) for p in problems]
        kept = [e for e in encoded if e is not None]
        if len(kept) < len(encoded):
            warn(
                f"{len(encoded) - len(kept)} of {len(encoded)} problems have a prompt of max_length="
                f"{self.max_length} tokens or more and were dropped; raise max_length."
            )
        if not kept:
            raise EmptyDataError(
                f"no problem of this batch fits max_length={self.max_length} with an answer token; raise max_length."
            )
        # Padded here rather than with transformers' DataCollatorForSeq2Seq: that one pads on the tokenizer's
        # padding_side (left for many chat models) and needs tokenizer.pad_token set; these batches are always
        # right-padded, with the EOS token when there is no pad token, and the user's tokenizer is left as is.
        width = max(len(e.input_ids) for e in kept)
        input_ids = torch.full((len(kept), width), self.pad_id, dtype=torch.long)  # (B, T)
        attention = torch.zeros((len(kept), width), dtype=torch.long)  # (B, T)
        labels = torch.full((len(kept), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for row, example in enumerate(kept):
            length = len(example.input_ids)
            input_ids[row, :length] = torch.tensor(example.input_ids)
            attention[row, :length] = 1
            labels[row, :length] = torch.tensor(example.labels)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def qa_loader(
    tokenizer: Any,
    problems: Sequence[QAProblem],
    batch_size: int,
    *,
    template: str = "auto",
    max_length: int | None = 512,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader[Any]:
    """A ``DataLoader`` of right-padded answer-masked batches over ``problems`` (the last one may be short).

    ``shuffle`` draws the order from a generator seeded with ``seed``, so a run is reproducible.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidConfigError(f"batch_size={batch_size!r} must be an integer >= 1, e.g. 8.")
    if not problems:
        raise EmptyDataError("qa_loader(problems=[]) has nothing to batch; pass at least one QAProblem.")
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        list(problems),  # type: ignore[arg-type]  # a list is a map-style dataset
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=QACollator(tokenizer, template, max_length),
    )


def answer_token_count(batch: dict[str, torch.Tensor]) -> int:
    """Tokens that count as answer: ``labels != -100`` and ``attention_mask == 1`` (the EVA rows)."""
    keep = batch["labels"] != IGNORE_INDEX  # (B, T)
    if "attention_mask" in batch:
        keep &= batch["attention_mask"] != 0
    return int(keep.sum().item())
