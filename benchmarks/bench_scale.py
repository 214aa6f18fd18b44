"""What EVA costs at LLM shapes on CPU: one Llama-2-7B-shaped decoder block (exact, sketch and peft's EVA
against the forward pass, one thread) and the whole SmolLM2-135M and Gemma-3-270M (sketch against exact), see
:mod:`eva_bench.engine.scale`; ``--plan`` prints the planner's figures for Llama-2-7B, Llama-3-8B and
Llama-2-70B beside peft's (:mod:`eva_bench.engine.plan_table`).

Usage: ``python benchmarks/bench_scale.py [--out docs/results/scale]`` (~20 min of CPU on one thread) or
``--quick`` (tiny shapes: a smoke test).
"""

from __future__ import annotations

from eva_bench.engine.scale import main

if __name__ == "__main__":
    main()
