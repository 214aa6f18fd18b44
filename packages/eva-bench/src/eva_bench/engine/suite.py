"""The four real models of the stopping benchmark (``benchmarks/bench_stopping.py``), one per domain, and
their batches: all offline, each model with the data it is fine-tuned on in the comparisons.

=========  ========================================================  ==========================================
key        model                                                     batches
=========  ========================================================  ==========================================
minilm     all-MiniLM-L6-v2 (eva-nlu)                                32 SST-2 train sentences, in file order
smollm2    SmolLM2-135M-Instruct, fp32 (eva-llm)                     8 GSM8K train problems, <= 256 tokens
dinov2     DINOv2 architecture pretrained locally (eva-vision)       32 Fashion-MNIST 5-9 train images, seeded order
dt         Decision Transformer ``dt-halfcheetah`` (eva-rl)          32 Walker2d windows of 20 steps, seeded
=========  ========================================================  ==========================================

The layers are the domain plugin's default targets, so every method measures the layers a user's fit
would. The DINOv2-architecture model and the Decision Transformer are read from ``$EVA_CACHE_DIR``, where
``benchmarks/pretrain_vision.py`` and ``benchmarks/pretrain_rl.py`` put them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from eva_core import plugin_manager

from . import data

__all__ = ["SUBJECTS", "Subject", "default_targets", "load_model", "make_batches"]


@dataclass(frozen=True)
class Subject:
    """One benchmarked model.

    Attributes:
        name: what the tables call it.
        cap: the most batches any fit may take (the tau rule and peft stop there if not converged).
        pool: batches of the reference pool, disjoint from (after) the ``cap`` fit batches.
    """

    name: str
    cap: int
    pool: int


SUBJECTS: dict[str, Subject] = {
    "minilm": Subject("MiniLM-L6 (SST-2)", cap=60, pool=480),
    "smollm2": Subject("SmolLM2-135M (GSM8K)", cap=24, pool=48),
    "dinov2": Subject("DINOv2-arch local (F-MNIST 5-9)", cap=100, pool=800),
    "dt": Subject("Decision Transformer (Walker2d)", cap=100, pool=800),
}
"""The models by key, with their batch caps and default pool sizes (``--pool`` overrides)."""

_BATCH = 32  # images and trajectory windows per batch


def load_model(key: str) -> nn.Module:
    """The model of ``key`` in eval mode (fp32).

    Raises:
        eva_core.errors.MissingDataError: a locally pretrained model is not in the cache.
    """
    if key in data.BENCHES:
        return data.load_model(key)
    if key == "dinov2":
        from eva_bench.vision.pretraining import load_pretrained

        torch.manual_seed(0)  # the new 5-class head; it is not targeted
        return load_pretrained(num_labels=5, build=False).eval()
    from eva_rl import load_pretrained as load_dt

    return load_dt("dt-halfcheetah")[0].eval()


def make_batches(key: str, count: int) -> list[Any]:
    """``count`` batches of model ``key``, always the same ones (the first ``n`` of ``count`` are those of
    ``make_batches(key, n)``)."""
    makers: dict[str, Callable[[int], list[Any]]] = {"dinov2": _image_batches, "dt": _trajectory_batches}
    return makers[key](count) if key in makers else data.batches(key, count)


def _image_batches(count: int) -> list[Any]:
    from eva_bench.vision.data import image_batches
    from eva_bench.vision.pretraining import FMNIST_MEAN, FMNIST_STD
    from eva_bench.vision.tasks import get_task

    images, labels = get_task("fmnist-5-9").load("train", None)  # (N, 1, 28, 28) uint8, (N,)
    batches = image_batches(images, labels, _BATCH, shuffle=True, seed=0, mean=FMNIST_MEAN, std=FMNIST_STD)
    if count > len(batches) - 1:  # the last batch may be short
        raise ValueError(f"count={count} asks for more than the {len(batches) - 1} full Fashion-MNIST 5-9 batches")
    return batches[:count]


def _trajectory_batches(count: int) -> list[Any]:
    from eva_bench.rl.tasks import load_task_data
    from eva_rl import trajectory_batches

    task = load_task_data("walker2d")
    windows = trajectory_batches(
        task.episodes, context=20, batch_size=_BATCH, batches=count, seed=0, return_scale=task.task.return_scale,
        stats=task.stats,
    )  # fmt: skip
    return list(windows)


def default_targets(model: nn.Module) -> str:
    """The domain plugin's default layers of ``model`` as one regex of their whole names (eva_core and peft
    both take it)."""
    hooks = plugin_manager().for_model(model)
    names = hooks.layers(model, hooks.config(model, None, {}))
    return "|".join(re.escape(name) for name in names)
