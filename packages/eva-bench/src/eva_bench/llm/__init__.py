"""The llm comparison: GSM8K-style question answering with a causal LM.

:mod:`.data` reads the shared GSM8K copy and compares final numbers, :mod:`.evaluation` scores a model
(held-out answer-token loss, exact match of greedy answers), :mod:`.recipe` is the llm part of
:func:`eva_bench.recipe.run`, :mod:`.scale` measures how large ``A x`` starts under each initialization
(``benchmarks/adapter_scale.py``).
"""

from __future__ import annotations

import argparse

from ..comparison import run_arguments
from ..records import RunRecord

__all__ = ["run_from_args"]


def run_from_args(args: argparse.Namespace, method: str, seed: int) -> RunRecord:
    """GSM8K-style QA: train on problems, evaluate answer-token loss and exact match on held-out ones.
    ``--model`` is an alias of :data:`eva_llm.cli.MODEL_ALIASES` (``smollm2``, ``gemma3-270m``) or a folder."""
    from eva_llm.cli import MODEL_ALIASES

    from .recipe import finetune

    checkpoint = MODEL_ALIASES.get(args.model.lower())
    return finetune(
        checkpoint() if checkpoint is not None else args.model,
        method=method,
        **run_arguments(args, seed),
        train_problems=args.train_limit or 1024,
        eval_problems=args.dev_limit or 64,
        generate_problems=args.generate_limit,
        max_length=args.max_length,
        max_new_tokens=args.max_new_tokens,
        metric=args.metric,
    )
