"""The scale benchmark on an accelerator (:mod:`eva_bench.engine.scale`): bf16 models, statistics on the
device, ``check_every=4``, exact and sketch and peft's EVA, on a Llama-2-7B-shaped block (16 batches of
8 x 512 tokens), SmolLM2-135M and Gemma-3-270M (32 batches each); memory is
``torch.cuda.max_memory_allocated``.

Usage: ``python benchmarks/bench_cuda.py [--out docs/results/scale_cuda]``; any option of
``bench_scale.py`` after it overrides these (``--device cpu --quick``: the CPU smoke test of this path).
"""

from __future__ import annotations

import sys

from eva_bench.engine.scale import main

CUDA = [
    "--device",
    "cuda",
    "--dtype",
    "bfloat16",
    "--check-every",
    "4",
    "--block-batches",
    "16",
    "--block-check-every",
    "4",
    "--model-batches",
    "32",
]

if __name__ == "__main__":
    main([*CUDA, *sys.argv[1:]])
