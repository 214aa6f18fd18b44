"""``finetune``: one LoRA fine-tuning run of a causal LM on GSM8K-style problems, with a held-out score.

The training problems are the first ``train_problems`` of the file; the held-out ones are its last
``eval_problems`` (disjoint, since the shared GSM8K copy has only a training split). The run:

1. seeds torch, builds the answer-masked training batches (order drawn from ``seed``);
2. wraps the model in LoRA adapters initialized by ``method`` (EVA measures the training batches,
   answer tokens only) and times it;
3. trains with :func:`eva_core.train` on the answer-token loss and evaluates at ``eval_at``: the
   held-out answer-token loss and, on the first ``generate_problems`` held-out problems, the exact
   match of the greedily generated final number.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from peft import LoraConfig
from torch import nn

from eva_core import InvalidConfigError, RunRecord, initialize, measure_cost, train

from . import architectures
from .api import DOMAIN, LLM_DEFAULTS, lora_config_for_model
from .batches import qa_loader
from .checkpoints import load_causal_lm
from .data import QAProblem, read_gsm8k
from .evaluation import answer_loss, exact_match, held_out_loss

__all__ = ["METRICS", "finetune"]

METRICS: tuple[str, ...] = ("exact_match", "loss")
"""Headline metrics :func:`finetune` can report (both are recorded when generation is on)."""


def finetune(
    model: str | os.PathLike[str] | nn.Module,
    *,
    tokenizer: Any = None,
    method: str = "eva",
    steps: int = 200,
    seed: int = 0,
    rank: int = 16,
    eval_at: Sequence[int] | None = None,
    lr: float = 5e-4,
    batch_size: int = 8,
    train_problems: int = 1024,
    eval_problems: int = 64,
    generate_problems: int = 16,
    max_new_tokens: int = 256,
    max_length: int = 512,
    template: str = "auto",
    metric: str = "exact_match",
    target_modules: Sequence[str] | str | None = None,
    lora_config: LoraConfig | None = None,
    eva_overrides: Mapping[str, Any] | None = None,
    data_path: str | os.PathLike[str] | None = None,
    generate_every_eval: bool = False,
    progress: bool = False,
) -> RunRecord:
    """Fine-tune LoRA adapters initialized by ``method`` and record the held-out curve.

    Args:
        model: a transformers folder (e.g. :func:`eva_llm.smollm2_checkpoint`) or a causal LM module
            (wrapped in place; pass ``tokenizer`` with it).
        method: any of :data:`eva_core.ALL_METHODS` (see :func:`eva_core.initialize`).
        steps: optimizer steps; ``eval_at``: steps after which to evaluate (default ``(0, steps)``).
        rank: the (average) LoRA rank. ``lr``: AdamW peak learning rate. ``batch_size``: problems a step.
        train_problems, eval_problems: how many problems to train on / hold out for the loss.
        generate_problems: held-out problems scored by greedy generation (0 turns exact match off;
            generation is slow on a CPU); ``max_new_tokens`` caps each answer. With ``metric="loss"``
            exact match is measured at the last evaluation only, unless ``generate_every_eval``.
        max_length: tokens per example (prompt and answer); longer answers are cut.
        template: ``"auto"`` (the chat template when the tokenizer has one), ``"chat"`` or ``"plain"``.
        metric: the headline metric, ``"exact_match"`` or ``"loss"`` (held-out answer-token loss).
        target_modules: default: every projection in the decoder blocks.
        lora_config: alpha, dropout... shared by every method (default ``lora_alpha = rank``).
        eva_overrides: :class:`eva_core.EvaConfig` fields for ``method="eva"`` (``max_steps``, ``tau``...).
        data_path: the JSON-lines file; default ``$EVA_DATA_DIR/gsm8k/train.jsonl``.

    Returns:
        the :class:`eva_core.RunRecord`; ``extra`` holds the EVA ranks and fit size for ``eva``.

    Raises:
        InvalidConfigError: an unknown ``metric`` or ``method``, exact match without generated
            problems, or more problems asked for than the file holds.
    """
    if metric not in METRICS:
        raise InvalidConfigError(f"metric={metric!r} is not one of {METRICS}; pick 'exact_match' or 'loss'.")
    if metric == "exact_match" and generate_problems < 1:
        raise InvalidConfigError(
            f"metric='exact_match' needs generated answers but generate_problems={generate_problems}; "
            "raise generate_problems or use metric='loss'."
        )
    model, tokenizer = _model_and_tokenizer(model, tokenizer)
    train_set, held_out = _split(data_path, train_problems, eval_problems)
    generated = held_out[: max(0, generate_problems)]

    torch.manual_seed(seed)
    loader = qa_loader(
        tokenizer, train_set, batch_size, template=template, max_length=max_length, shuffle=True, seed=seed
    )
    eval_batches = list(qa_loader(tokenizer, held_out, batch_size, template=template, max_length=max_length))
    targets = target_modules if target_modules is not None else architectures.target_modules(model)
    config = lora_config_for_model(model, rank, lora_config, targets=targets)
    overrides = {"domain": DOMAIN, "rho": LLM_DEFAULTS.rho, "tau": LLM_DEFAULTS.tau, "progress": progress}

    with measure_cost() as init_cost:
        peft_model = initialize(
            model,
            method,
            loader,
            rank=rank,
            target_modules=targets,
            lora_config=config,
            eva_overrides={**overrides, **(eva_overrides or {})},
            loss_fn=answer_loss,
            steps=steps,
        )

    schedule = tuple(eval_at) if eval_at is not None else (0, steps)
    evaluations = iter(sorted(set(schedule)))

    def evaluate(adapted: nn.Module) -> dict[str, float]:
        step = next(evaluations)
        metrics = {"loss": held_out_loss(adapted, eval_batches)}
        if generated and (generate_every_eval or step == max(schedule) or metric == "exact_match"):
            metrics["exact_match"] = exact_match(
                adapted, tokenizer, generated, template=template, max_new_tokens=max_new_tokens, batch_size=batch_size
            )
        return metrics

    started = time.perf_counter()
    curve = train(
        peft_model,
        loader,
        answer_loss,
        evaluate,
        steps=steps,
        eval_at=schedule,
        lr=lr,
        progress=progress,
    )
    train_seconds = time.perf_counter() - started

    extra: dict[str, Any] = {
        "template": template,
        "train_problems": len(train_set),
        "eval_problems": len(held_out),
        "generate_problems": len(generated),
        "batch_size": batch_size,
        "lr": lr,
    }
    return RunRecord.of(
        peft_model,
        method=method,
        seed=seed,
        metric=metric,
        init_seconds=init_cost.seconds,
        init_peak_bytes=init_cost.peak_bytes,
        train_seconds=train_seconds,
        curve=curve,
        extra=extra,
    )


def _model_and_tokenizer(model: str | os.PathLike[str] | nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    if isinstance(model, nn.Module):
        if tokenizer is None:
            raise InvalidConfigError(
                f"finetune(model=<{type(model).__name__}>) needs tokenizer=...; pass the model's tokenizer, or "
                "pass a checkpoint folder instead of a module."
            )
        return model, tokenizer
    loaded, own_tokenizer = load_causal_lm(model)
    return loaded, tokenizer if tokenizer is not None else own_tokenizer


def _split(
    path: str | os.PathLike[str] | None, train_count: int, eval_count: int
) -> tuple[list[QAProblem], list[QAProblem]]:
    problems = read_gsm8k(path)
    if train_count < 1 or eval_count < 1 or train_count + eval_count > len(problems):
        raise InvalidConfigError(
            f"train_problems={train_count} and eval_problems={eval_count} must each be >= 1 and together at most "
            f"the {len(problems)} problems of the file; lower them."
        )
    return problems[:train_count], problems[-eval_count:]
