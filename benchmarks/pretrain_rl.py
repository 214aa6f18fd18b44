"""Build the RL comparison's cached artifacts and print what they hold.

Trains the ARS behaviour policies, records the HalfCheetah-v5 (source) and Walker2d-v5 (target) minari
datasets and pretrains the ``dt-halfcheetah`` Decision Transformer, all under ``$EVA_CACHE_DIR``
(default ``~/.cache/eva``); cached artifacts built with the same settings are reused. The work is
:func:`eva_bench.rl.pretrain.main`'s.

    python benchmarks/pretrain_rl.py [--alias dt-halfcheetah] [--rebuild] [--progress] [--threads 1]
"""

from __future__ import annotations

from eva_bench.rl.pretrain import main

if __name__ == "__main__":
    main()
