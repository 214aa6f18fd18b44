"""Pretrain the "DINOv2 architecture, pretrained locally" model (supervised, Fashion-MNIST classes 0-4).

Builds a small transformers ``Dinov2ForImageClassification`` and trains it on one CPU thread (a few
minutes), then saves it under ``$EVA_CACHE_DIR/dinov2-arch-fmnist04/<settings hash>/``, where
``eva_vision.finetune(model="dinov2-local", ...)`` finds it. This is supervised pretraining of the DINOv2
architecture, not DINO self-supervision and not Meta's DINOv2 weights.

    python benchmarks/pretrain_vision.py [--steps 1000] [--force]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

import torch

from eva_vision.pretrain import LABEL, PretrainSettings, pretrain, pretrain_record, pretrained_dir


def main() -> None:
    defaults = PretrainSettings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="retrain even if a model for these settings is cached")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = dataclasses.replace(defaults, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    folder = pretrained_dir(settings)
    if args.force or pretrain_record(folder) is None:
        folder = pretrain(settings, progress=sys.stderr.isatty())
    record = pretrain_record(folder) or {}
    print(f"{LABEL}: {folder}")
    print("| dev accuracy | dev loss | minutes | steps | batch |\n|---|---|---|---|---|")
    dev = record.get("dev", {})
    print(
        f"| {dev.get('accuracy', float('nan')):.4f} | {dev.get('loss', float('nan')):.4f} | "
        f"{record.get('minutes')} | {settings.steps} | {settings.batch_size} |"
    )
    print(json.dumps(record.get("settings", {})))


if __name__ == "__main__":
    main()
