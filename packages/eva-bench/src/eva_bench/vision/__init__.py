"""The vision comparison: its tasks, models and fine-tuning runs.

``data`` reads Fashion-MNIST (torchvision's reader) and scikit-learn's digits; ``tasks`` names the
classification tasks; ``pretraining`` builds the "DINOv2 architecture, pretrained locally" model;
``evaluation`` scores a classifier; ``recipe.finetune`` is the vision part of :func:`eva_bench.recipe.run`.
"""

from __future__ import annotations

import argparse

from ..comparison import run_arguments
from ..records import RunRecord

__all__ = ["run_from_args"]


def run_from_args(args: argparse.Namespace, method: str, seed: int) -> RunRecord:
    """Image classification: a pretrained backbone with a new head, trained on the task's train images and
    evaluated on its held-out ones (``dinov2-local`` is built by ``benchmarks/pretrain_vision.py`` when
    missing)."""
    from .recipe import finetune

    return finetune(
        args.model,
        args.task,
        method,
        **run_arguments(args, seed),
        train_limit=args.train_limit,
        dev_limit=args.dev_limit,
    )
