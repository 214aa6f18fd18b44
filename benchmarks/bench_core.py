"""Benchmark ``eva_core.fit`` against peft's EVA and plain forward passes, on real models and text (see
:mod:`eva_bench.engine.benchmark`).

Usage: ``python benchmarks/bench_core.py --out docs/results/engine`` (full, ~20 CPU-minutes) or ``--quick``
(a smoke test).
"""

from __future__ import annotations

from eva_bench.engine.benchmark import main

if __name__ == "__main__":
    main()
