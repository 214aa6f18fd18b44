"""How large ``A x`` starts under each initialization: EVA, EVA whitened, and LoRA's random ``A``.

Prints, per layer kind, the mean ``|A x|`` over the answer tokens of real GSM8K batches (the measurement
is :mod:`eva_bench.llm.scale`)::

    python benchmarks/adapter_scale.py --model gemma3-270m
"""

from __future__ import annotations

from eva_bench.llm.scale import main

if __name__ == "__main__":
    main()
