"""The converged report: each method at its own tuned learning rate, runs long enough to flatten, five
paired seeds, held-out scores with confidence intervals (see :mod:`eva_bench.converged.cli`).

    python benchmarks/converged.py                  # run what the cache lacks, then render
    python benchmarks/converged.py --render-only    # docs/results/converged from the committed cache
"""

from __future__ import annotations

import sys

from eva_bench.converged.cli import main

if __name__ == "__main__":
    sys.exit(main())
