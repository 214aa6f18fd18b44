"""``finetune``: one LoRA fine-tuning run of a causal LM on GSM8K-style problems, with a held-out score.

The llm part of :func:`eva_bench.recipe.run`: it builds the :class:`eva_bench.recipe.Task` and the shared
recipe initializes, trains and records. The training problems are the first ``train_problems`` of the file;
the held-out ones are its last ``eval_problems`` (disjoint, since the shared GSM8K copy has only a training
split), both among the problems whose prompt leaves room for an answer token within ``max_length``. The run:

1. builds the answer-masked training batches (order drawn from ``seed``);
2. wraps the model in LoRA adapters initialized by ``method`` (EVA measures the training batches,
   answer tokens only, with the ``llm`` plugin's defaults) and times it;
3. trains on the answer-token loss and evaluates at ``eval_at``: the held-out answer-token loss and, on
   the first ``generate_problems`` held-out problems, the exact match of the greedily generated final
   number (at every evaluation for ``metric="exact_match"``, else at the last one only).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from eva_core.errors import InvalidConfigError
from eva_llm import QAProblem, load_causal_lm, plugin, qa_loader
from eva_llm.batches import encode

from ..recipe import Task, run
from ..records import RunRecord
from ..splits import carve
from .data import read_gsm8k
from .evaluation import answer_loss, exact_match, held_out_loss

if TYPE_CHECKING:
    from peft import LoraConfig

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
    rank: int | None = None,
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
    validation: int = 0,
) -> RunRecord:
    """Fine-tune LoRA adapters initialized by ``method`` and record the held-out curve.

    Args:
        model: a transformers folder (e.g. :func:`eva_llm.smollm2_checkpoint`) or a causal LM module
            (wrapped in place; pass ``tokenizer`` with it).
        method: any of :data:`eva_bench.ALL_METHODS` (see :func:`eva_bench.initialize`).
        steps: optimizer steps; ``eval_at``: steps after which to evaluate (default ``(0, steps)``).
        rank: the (average) LoRA rank (default: the domain's). ``lr``: AdamW peak learning rate.
            ``batch_size``: problems a step.
        train_problems, eval_problems: how many problems to train on / hold out for the loss.
        generate_problems: held-out problems scored by greedy generation (0 turns exact match off;
            generation is slow on a CPU); ``max_new_tokens`` caps each answer. With ``metric="loss"``
            exact match is measured at the last evaluation only, unless ``generate_every_eval``.
        max_length: tokens per example (prompt and answer); longer answers are cut.
        template: ``"auto"`` (the chat template when the tokenizer has one), ``"chat"`` or ``"plain"``.
        metric: the headline metric, ``"exact_match"`` or ``"loss"`` (held-out answer-token loss).
        target_modules: default: every projection in the decoder blocks (the ``llm`` plugin's).
        lora_config: alpha, dropout... shared by every method (default: the plugin's fields,
            ``lora_alpha = rank``); ``fan_in_fan_out`` is switched on for GPT-2 ``Conv1D`` targets.
        eva_overrides: :class:`eva_core.EvaConfig` fields for EVA (``max_steps``, ``tau``...).
        data_path: the JSON-lines file; default ``$EVA_DATA_DIR/gsm8k/train.jsonl``.
        validation: problems set apart (the ``validation`` just before the held-out ones) whose answer-token
            loss is the curve; the held-out loss and exact match are then scored once, after the last step
            (the record's ``held_out``). 0: the curve is the held-out score.

    Returns:
        the :class:`eva_bench.RunRecord`; ``extra`` holds the EVA ranks and fit size for ``eva``.

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
    train_set, held_out = _split(
        data_path,
        train_problems,
        eval_problems + validation,
        lambda problem: encode(tokenizer, problem, template, max_length) is not None,
    )
    validation_set, held_out = carve(held_out, eval_problems) if validation else ([], held_out)
    schedule = tuple(eval_at) if eval_at is not None else (0, steps)
    generated = held_out[: max(0, generate_problems)]

    def scorer(problems: Sequence[QAProblem], at: Sequence[int], generate: Sequence[QAProblem]) -> HeldOut:
        batches = list(qa_loader(tokenizer, problems, batch_size, template=template, max_length=max_length))
        due = at if generate_every_eval or metric == "exact_match" else (max(at),)
        return HeldOut(
            tokenizer, batches, generate, at, generate_at=due, template=template, max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )  # fmt: skip

    def loader() -> Any:  # a fresh generator: training reads the same order whether or not EVA read first
        return qa_loader(
            tokenizer, train_set, batch_size, template=template, max_length=max_length, shuffle=True, seed=seed
        )

    task = Task(
        model=model,
        batches=loader(),
        loss_fn=answer_loss,
        evaluate=scorer(validation_set, schedule, validation_set[: len(generated)] if metric == "exact_match" else [])
        if validation
        else scorer(held_out, schedule, generated),
        held_out=scorer(held_out, (steps,), generated) if validation else None,
        train_batches=loader(),
        metric=metric,
        domain=plugin.DOMAIN,
        target_modules=target_modules,
        lora_config=lora_config,
        extra={
            "template": template,
            "train_problems": len(train_set),
            "validation_problems": len(validation_set),
            "eval_problems": len(held_out),
            "generate_problems": len(generated),
            "batch_size": batch_size,
            "lr": lr,
        },
    )
    return run(
        task,
        method,
        seed=seed,
        rank=rank,
        steps=steps,
        lr=lr,
        eval_at=schedule,
        eva_overrides=eva_overrides,
        progress=progress,
    )


class HeldOut:
    """The run's ``evaluate``: the held-out answer-token loss at every evaluation, and the exact match of
    greedy answers to ``generated`` at the steps of ``generate_at``.

    :func:`eva_bench.train` evaluates once per step of ``schedule``, in step order, so the step of a call
    is the next one of the sorted schedule (generation is slow: it runs only where it is due).
    """

    def __init__(
        self,
        tokenizer: Any,
        batches: list[dict[str, Any]],
        generated: Sequence[QAProblem],
        schedule: Sequence[int],
        *,
        generate_at: Sequence[int],
        template: str,
        max_new_tokens: int,
        batch_size: int,
    ) -> None:
        self.tokenizer, self.batches, self.generated = tokenizer, batches, list(generated)
        self.steps = iter(sorted(set(schedule)))
        self.generate_at = set(generate_at) if generated else set()
        self.template, self.max_new_tokens, self.batch_size = template, max_new_tokens, batch_size

    def __call__(self, model: nn.Module) -> dict[str, float]:
        step = next(self.steps)
        metrics = {"loss": held_out_loss(model, self.batches)}
        if step in self.generate_at:
            metrics["exact_match"] = exact_match(
                model,
                self.tokenizer,
                self.generated,
                template=self.template,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
            )
        return metrics


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
    path: str | os.PathLike[str] | None, train_count: int, eval_count: int, fits: Callable[[QAProblem], bool]
) -> tuple[list[QAProblem], list[QAProblem]]:
    """The first ``train_count`` and the last ``eval_count`` problems of the file among those that ``fits``
    (a problem whose prompt leaves no room for an answer token is skipped: a batch of it alone has nothing
    to score)."""
    problems = read_gsm8k(path)
    if train_count < 1 or eval_count < 1 or train_count + eval_count > len(problems):
        raise InvalidConfigError(
            f"train_problems={train_count} and eval_problems={eval_count} must each be >= 1 and together at most "
            f"the {len(problems)} problems of the file; lower them."
        )
    train = list(itertools.islice(filter(fits, problems), train_count))
    held_out = list(itertools.islice(filter(fits, reversed(problems)), eval_count))[::-1]
    if (
        len(train) < train_count
        or len(held_out) < eval_count
        or problems.index(held_out[0]) <= problems.index(train[-1])
    ):
        raise InvalidConfigError(
            f"train_problems={train_count} and eval_problems={eval_count}: too few problems fit max_length; raise "
            "max_length or lower them."
        )
    return train, held_out
