"""Bytes a distributed fit exchanges per convergence check, exact statistics against the sketch, on 2, 4
and 8 gloo processes, then the same formula for Llama-2-7B and -70B on 8 ranks (see
:mod:`eva_bench.engine.distributed_comm`).

Usage: ``python benchmarks/bench_distributed.py [--out docs/results/distributed_comm.json]`` (~5 min on 2
cores) or ``--quick`` (2 ranks, small inputs: a smoke test, ~20 s).
"""

from __future__ import annotations

from eva_bench.engine.distributed_comm import main

if __name__ == "__main__":
    main()
