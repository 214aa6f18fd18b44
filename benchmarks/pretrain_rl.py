"""Build the RL comparison's cached artifacts and print what they hold.

Trains the ARS behaviour policies, records the HalfCheetah-v5 (source) and Walker2d-v5 (target) minari
datasets and pretrains the ``dt-halfcheetah`` Decision Transformer, all under ``$EVA_CACHE_DIR``
(default ``~/.cache/eva``); cached artifacts built with the same settings are reused.

    python benchmarks/pretrain_rl.py [--alias dt-halfcheetah] [--rebuild] [--progress]
"""

from __future__ import annotations

import argparse
import logging

import torch

from eva_rl.pretrain import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alias", default="dt-halfcheetah")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the model even if cached")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(main(args.alias, rebuild=args.rebuild, progress=args.progress))
