"""How many batches each stopping rule takes, how long, and how accurate the result is against a large
pool of batches, on one real model per domain (see :mod:`eva_bench.engine.stopping`).

Usage: ``python benchmarks/bench_stopping.py --cache DIR [--out docs/results/stopping]`` (full: 28 min on
one thread per process once the pool references are in ``DIR``, 22 min more to build them) or ``--quick``
(MiniLM only, tiny pool: a smoke test, 80 s).
"""

from __future__ import annotations

from eva_bench.engine.stopping import main

if __name__ == "__main__":
    main()
