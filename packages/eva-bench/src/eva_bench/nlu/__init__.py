"""The nlu comparison: GLUE tasks as the bench scores them, their labelled rows, and fine-tuning runs.

Its parts: :mod:`.metrics` (scikit-learn / scipy GLUE metrics and each task's scoring), :mod:`.data`
(labelled rows, the shared data folder's GLUE files) and :mod:`.recipe` (``finetune``, ``evaluate``).
A task's text columns and label count are eva-nlu's (:mod:`eva_nlu.glue`), which ``eva-lora fit`` uses too.
"""

from __future__ import annotations

import argparse

from ..comparison import run_arguments
from ..records import RunRecord
from .data import labelled_rows, shared_glue_path
from .metrics import SCORING, glue_metrics, majority_baseline, scoring
from .recipe import evaluate, finetune

__all__ = [
    "SCORING",
    "evaluate",
    "finetune",
    "glue_metrics",
    "labelled_rows",
    "majority_baseline",
    "run_from_args",
    "scoring",
    "shared_glue_path",
]


def run_from_args(args: argparse.Namespace, method: str, seed: int) -> RunRecord:
    """GLUE: train on the task's train split (first ``--train-limit`` rows), evaluate on dev; the files
    come from the shared data folder (``$EVA_DATA_DIR``, see :func:`shared_glue_path`)."""
    return finetune(
        args.model,
        args.task,
        method,
        train=shared_glue_path(args.task, "train"),
        dev=shared_glue_path(args.task, "dev"),
        **run_arguments(args, seed),
        train_limit=args.train_limit,
        dev_limit=args.dev_limit,
    )
