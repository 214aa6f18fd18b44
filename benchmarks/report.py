"""One command regenerates the whole paper-style report from cached runs, or reruns what is missing (see
:mod:`eva_bench.paper.report`).

Examples (from the repository root)::

    python benchmarks/report.py                        # ~2 h on 2 cores when nothing is cached
    python benchmarks/report.py --render-only          # tables and figures from what is cached
    python benchmarks/report.py --domains nlu --methods lora eva --seeds 0
    python benchmarks/report.py --large                # longer runs, into docs/results/paper-large
"""

from __future__ import annotations

import sys

from eva_bench.paper.report import main

if __name__ == "__main__":
    sys.exit(main())
