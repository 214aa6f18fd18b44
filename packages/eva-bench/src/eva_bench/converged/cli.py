"""``benchmarks/converged.py``: run what the converged report still needs, then render it from the cache.

Examples (from the repository root)::

    python benchmarks/converged.py                       # every missing run, 2 at a time, then the pages
    python benchmarks/converged.py --tasks fmnist59 digits
    python benchmarks/converged.py --plan                # what is cached, what is due, the CPU it will take
    python benchmarks/converged.py --render-only         # the pages (and the results index's summary) from the
                                                         # cache, running nothing
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ..paths import repository_root
from .baselines import read_baselines, write_baselines
from .cache import RunKey
from .protocol import KEY_SETTINGS, METHODS, PROTOCOLS, SEEDS, get_protocol
from .results import load_results
from .runner import run_needed, run_one
from .selection import needed_runs

__all__ = ["DEFAULT_OUT", "main"]

DEFAULT_OUT = repository_root() / "docs" / "results" / "converged"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} runs at once cannot run anything; give 1 or more")
    return value


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [p.name for p in PROTOCOLS]
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the report's folder (default: %(default)s)")
    parser.add_argument("--cache", type=Path, default=None, help="run files (default: <out>/runs)")
    parser.add_argument("--tasks", nargs="+", default=names, choices=names, help="default: all, cheapest first")
    parser.add_argument("--jobs", type=_positive, default=2, help="runs at once, one torch thread each")
    parser.add_argument("--plan", action="store_true", help="print what is cached and due; run nothing")
    parser.add_argument(
        "--render-only", action="store_true", help="render the pages from the cache and baselines.json; run nothing"
    )
    parser.add_argument(
        "--one", nargs="+", metavar="ARG", help="run one: TASK METHOD LR SEED [NAME=VALUE ...] (what the pool launches)"
    )
    args = parser.parse_args(argv)
    if args.one is not None:
        try:
            args.one = _one_key(args.one)
        except (ValueError, KeyError) as error:
            parser.error(f"--one {' '.join(args.one)}: {error}; give TASK METHOD LR SEED [NAME=VALUE ...]")
    return args


def _one_key(spec: Sequence[str]) -> RunKey:
    """The run ``--one`` names: TASK METHOD LR SEED [NAME=VALUE ...] (raises ValueError / KeyError on a bad one)."""
    if len(spec) < 4:
        raise ValueError(f"{len(spec)} values, 4 at least")
    task, method, lr, seed, *pairs = spec
    get_protocol(task)
    if method not in METHODS:
        raise ValueError(f"method {method!r} is none of {list(METHODS)}")
    if any("=" not in pair for pair in pairs):
        raise ValueError(f"a setting is NAME=VALUE, got {pairs}")
    setting = {name: float(value) for name, value in (pair.split("=", 1) for pair in pairs)}
    return RunKey.of(task, method, float(lr), int(seed), setting)


def _one(cache: Path, key: RunKey) -> None:
    torch.set_num_threads(1)
    print(run_one(cache, key), flush=True)


def _plan(cache: Path, tasks: Sequence[str]) -> None:
    for name in tasks:
        protocol = get_protocol(name)
        task = load_results(cache, protocol)
        cpu = task.cpu_seconds() / 60
        head = f"{name}: {len(task.runs)} runs cached ({cpu:.0f} CPU-min), {task.stale} stale"
        if task.complete:
            print(f"{head}; complete", flush=True)
            continue
        due = needed_runs(protocol, task.runs)
        # the fewest runs a task takes; a rate beyond a grid edge adds one, and its win re-runs the seeds
        total = len(METHODS) * (len(protocol.lr_grid) + len(SEEDS) - 1) + sum(map(len, KEY_SETTINGS.values()))
        left = max(total - len(task.runs), len(due))
        per_run = cpu / len(task.runs) if task.runs else protocol.cpu_minutes  # measured once a run is cached
        print(
            f"{head}, {len(due)} due now; {total} runs at the fewest; at least ~{left * per_run:.0f} CPU-min to finish",
            flush=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    cache = args.cache or args.out / "runs"
    if args.one is not None:
        _one(cache, args.one)
        return 0
    if args.plan:
        _plan(cache, args.tasks)
        return 0
    protocols = [get_protocol(t) for t in args.tasks]
    if not args.render_only:
        write_baselines(args.out, PROTOCOLS)  # every task's, whichever run now: the page shows them all
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
        failed = run_needed(cache, protocols, args.jobs, args.out / "logs")
        if failed:
            print(
                f"{len(failed)} runs failed: {[key.label() for key in failed]}; see {args.out / 'logs'}",
                file=sys.stderr,
            )
    from .page import render

    render(cache, args.out, read_baselines(args.out))
    if args.out == DEFAULT_OUT:  # the results index leads with this report's summary
        from ..pages import refresh_table

        refresh_table(repository_root(), "docs/results/README.md", "converged")
    return 0
