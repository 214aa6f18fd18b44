"""The paper-style report: every initialization of the EVA paper x every task of each domain, from the
cached runs of :mod:`eva_bench.comparison` (``benchmarks/report.py`` is its command line)."""

from __future__ import annotations
