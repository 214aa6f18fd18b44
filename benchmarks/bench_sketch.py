"""How close the streaming sketch comes to the exact SVD of all rows, beside peft's incremental PCA on the
same rows, and its cost per batch against the exact Gram update (see :mod:`eva_bench.engine.sketch_accuracy`).

Usage: ``python benchmarks/bench_sketch.py [--out docs/results/sketch]`` (MiniLM, SmolLM2, Gemma-3-270M and
synthetic rows at d_in = 4096 and 11008, one thread) or ``--quick`` (a smoke test).
"""

from __future__ import annotations

from eva_bench.engine.sketch_accuracy import main

if __name__ == "__main__":
    main()
