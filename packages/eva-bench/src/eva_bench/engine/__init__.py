"""The engine benchmark: eva-core's fit against peft's EVA and plain forward passes on real models
(``benchmarks/bench_core.py`` is its command line)."""

from __future__ import annotations
