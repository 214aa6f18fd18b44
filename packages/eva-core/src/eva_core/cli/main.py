"""``eva-lora``: the five commands, and the one place errors become a line on stderr and an exit status.

Each command takes the parsed arguments (:mod:`.parser`), prints a short summary to stdout and returns the
exit status; errors are raised and turned into one line on stderr by :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from eva_core import EvaState, LoadedModel, apply, fit, plan  # the command line is a client of the public API
from eva_core.errors import EvaError, MissingModelError, MissingStateError, UnreadableDataError, UnsafeOutputError

from .domains import CliDomains, DomainOptions, installed_plugins
from .parser import PROG, build_parser

__all__ = [
    "ADAPTER_DIR",
    "COMMANDS",
    "FIT_FLAGS",
    "PLAN_FLAGS",
    "STATE_DIR",
    "find_state",
    "main",
    "run_fit",
    "run_plan",
    "run_plugins",
    "run_reallocate",
    "run_report",
]

STATE_DIR = "state"
"""Sub-folder of ``--out`` holding the saved :class:`EvaState`."""
ADAPTER_DIR = "adapter"
"""Sub-folder of ``eva-lora fit --out`` holding the peft adapter (``PeftModel.from_pretrained`` reads it)."""

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


def run_fit(args: argparse.Namespace) -> int:
    """``eva-lora fit MODEL DATA``: load, fit, save the state and the adapter, print a summary.

    The domain and its defaults are chosen as ``eva_core.fit`` chooses them (``--domain``, else the plugin
    that claims the loaded model); a flag that is not given keeps the domain's default. ``--out`` is checked
    before anything is loaded, and written only once the fit and the adapter succeeded."""
    options = DomainOptions(dict(args.option or []))
    _check_data(args.data)
    _check_model(args.model)
    out = _Output(args.out, args.overwrite, (STATE_DIR, ADAPTER_DIR), model=args.model, data=args.data)
    domains = CliDomains()
    loaded = domains.load_model(args.model, args.data, options, args.domain)
    hooks = domains.for_model(loaded, args.domain)
    config = hooks.config(loaded.model, None, {**_given(args), "domain": hooks.domain})
    rows = config.max_steps * args.batch_size
    batches = domains.batches(hooks, args.data, loaded, args.batch_size, rows, options)
    options.check_read(hooks.domain)
    state = fit(loaded.model, batches, config, plugins=domains.manager)
    state.extra["cli"] = {
        "model": args.model,
        "data": args.data,
        "domain": hooks.domain,
        "batch_size": args.batch_size,
        "options": options.given,
    }
    peft_model = apply(loaded.model, state, loaded.lora_config, plugins=domains.manager)
    with out.staged() as staging:
        state.save(staging / STATE_DIR)
        peft_model.save_pretrained(str(staging / ADAPTER_DIR))
    _print_summary(state, f"EVA fit of {args.model} on {args.data} (domain {hooks.domain})")
    print(f"state:   {out.folder / STATE_DIR}")
    print(f"adapter: {out.folder / ADAPTER_DIR}  (peft.PeftModel.from_pretrained(base_model, this folder))")
    return 0


FIT_FLAGS: Mapping[str, str] = {
    "rank": "rank",
    "rho": "rho",
    "tau": "tau",
    "target_error": "target_error",
    "max_batches": "max_steps",
    "targets": "target_modules",
    "seed": "seed",
    "whiten": "whiten",
}
"""``eva-lora fit`` flags (argparse names) and the :class:`EvaConfig` fields they set; ``None`` (not given) keeps
the domain's default."""


def _given(args: argparse.Namespace) -> dict[str, object]:
    """The :class:`EvaConfig` fields the command line sets: every given flag of :data:`FIT_FLAGS`, and the
    progress bar."""
    given: dict[str, object] = {field: getattr(args, flag) for flag, field in FIT_FLAGS.items()}
    given = {field: value for field, value in given.items() if value is not None}
    if "target_error" in given:  # --target-error selects the subspace-error rule (argparse refuses it with --tau)
        given["tau"] = None
    return {**given, "progress": not args.no_progress}


PLAN_FLAGS: Mapping[str, str] = {
    "rank": "rank",
    "rho": "rho",
    "targets": "target_modules",
    "statistics": "statistics",
    "gram_memory": "gram_memory_bytes",
}
"""``eva-lora plan`` flags and the :class:`EvaConfig` fields they set."""


def run_plan(args: argparse.Namespace) -> int:
    """``eva-lora plan MODEL``: build the model from its configuration on the meta device (the domain's
    ``eva_cli_example``), plan a fit on batches of ``--batch-size`` x ``--seq-len`` and print the table."""
    options = DomainOptions(dict(args.option or []))
    _check_model(args.model)
    domains = CliDomains()
    model, batch = domains.example(args.model, args.batch_size, args.seq_len, options, args.domain)
    domain = domains.for_model(LoadedModel(model=model), args.domain).domain
    options.check_read(domain)
    given = {field: getattr(args, flag) for flag, field in PLAN_FLAGS.items() if getattr(args, flag) is not None}
    predicted = plan(
        model, batch, plugins=domains.manager, world_size=args.world_size, device=args.device, domain=domain, **given
    )
    print(f"EVA plan of {args.model} (domain {domain}) on batches of {args.batch_size} x {args.seq_len}:")
    print(predicted.table())
    return 0


def run_reallocate(args: argparse.Namespace) -> int:
    """``eva-lora reallocate STATE_DIR``: re-budget the ranks of a saved state, offline."""
    folder = find_state(args.state_dir)
    out = _Output(args.out, args.overwrite, (STATE_DIR,), STATE_DIR=args.state_dir, state=str(folder))
    state = EvaState.load(folder)
    new = state.reallocate(rank=args.rank, rho=args.rho, redistribution=args.redistribution)
    with out.staged() as staging:
        new.save(staging / STATE_DIR)
    changed = sum(new.ranks[name] != state.ranks[name] for name in new.ranks)
    print(
        f"reallocated {folder}: rank {state.config.rank} -> {new.config.rank}, rho {state.config.rho} -> "
        f"{new.config.rho}; {changed} of {len(new.ranks)} layers changed rank"
    )
    _print_summary(new, "new ranks")
    print(f"state:   {out.folder / STATE_DIR}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``eva-lora report STATE_DIR``: write ``report.html`` and its PNG charts."""
    from ..report import write_report

    folder = find_state(args.state_dir)
    out = _Output(args.out, args.overwrite, ("report.html", "*.png"), STATE_DIR=args.state_dir, state=str(folder))
    state = EvaState.load(folder)
    with out.staged() as staging:
        page = write_report(state, staging, title=args.title or f"EVA report: {folder}")
    print(f"report: {out.folder / page.name}")
    return 0


def run_plugins(args: argparse.Namespace) -> int:
    """``eva-lora plugins``: the installed domains; exit status 1 when one fails to load."""
    infos = installed_plugins()
    rows = [("DOMAIN", "DISTRIBUTION", "VERSION", "ENTRY POINT", "STATUS", "EVA FIT")]
    for info in infos:
        fit_support = ",".join({"eva_cli_load_model": "model", "eva_cli_batches": "data"}[h] for h in info.cli_hooks)
        rows.append((info.domain, info.distribution, info.version, info.entry_point, info.status, fit_support or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0 if all(info.ok for info in infos) else 1


def find_state(path: str) -> Path:
    """The folder holding a saved state: ``path`` itself or its ``state/`` sub-folder (an ``eva-lora fit --out``).

    Raises:
        MissingStateError: neither holds one.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MissingStateError(f"STATE_DIR={path!r} is not a folder; pass the --out folder of `eva-lora fit`.")
    for candidate in (folder, folder / STATE_DIR):
        if (candidate / "eva_state.json").is_file():
            return candidate
    raise MissingStateError(
        f"STATE_DIR={path!r} holds no saved EVA state (no eva_state.json there or in {STATE_DIR}/); pass the "
        "--out folder of `eva-lora fit` or a folder written by EvaState.save()."
    )


def _print_summary(state: EvaState, title: str) -> None:
    ranks = list(state.ranks.values())
    converged = len(state.layers) - len(state.not_converged)
    rows = max((layer.rows for layer in state.layers.values()), default=0)
    print(f"{title}: {state.steps} batches, {state.seconds:.1f} s")
    print(
        f"layers:  {len(ranks)} targeted, {converged} converged ({state.config.stopping}), up to {rows} rows per layer"
    )
    print(
        f"ranks:   total {sum(ranks)} = {state.config.rank} x {len(ranks)} layers, min {min(ranks, default=0)}, "
        f"max {max(ranks, default=0)} (cap round(rho*r) = {state.config.max_components})"
    )


def _check_data(data: str) -> None:
    """A DATA that exists must be readable, and one spelled as a path (or with a file suffix) must exist;
    other names (a task alias such as ``walker2d``) are left to the domains."""
    path = Path(data).expanduser()
    if not path.exists():
        if data.startswith(_PATH_PREFIXES) or path.suffix or len(path.parts) > 1:
            raise UnreadableDataError(
                f"DATA={data!r}: no such file or folder; pass the path of a data file (e.g. train.tsv) or folder."
            )
        return
    if not os.access(path, os.R_OK) or not (path.is_file() or path.is_dir()):
        raise UnreadableDataError(f"DATA={data!r} is not a readable file or folder; check its path and permissions.")


def _check_model(model: str) -> None:
    """A MODEL that is spelled as a path must exist (aliases and hub names are left to the domains)."""
    if model.startswith(_PATH_PREFIXES) and not Path(model).expanduser().exists():
        raise MissingModelError(
            f"MODEL={model!r}: no such file or folder; pass a model folder, an alias (e.g. minilm, smollm2) or "
            "package.module:factory."
        )


class _Output:
    """The ``--out DIR`` of a command, checked before any work and written all at once at the end.

    The command writes its ``entries`` (``state``, ``adapter``...) into a staging folder inside DIR; each is
    then renamed into place, an old one of the same name (``--overwrite``) moved aside first and deleted
    once the new one is in place, so DIR holds either the old entry or the new one, never a mix, and a
    command that fails or is interrupted leaves DIR as it was. Other files in DIR are never touched.

    Raises:
        UnsafeOutputError: DIR is a file, is or holds one of ``inputs`` (argument name -> path), exists and
            is not empty without ``overwrite``, or cannot be created or written.
    """

    def __init__(self, out: str, overwrite: bool, entries: tuple[str, ...], **inputs: str) -> None:
        self.folder = Path(out).expanduser()
        self.overwrite = overwrite
        where = self.folder.resolve()
        for argument, value in inputs.items():
            source = Path(value).expanduser()
            if source.exists() and (where == source.resolve() or where in source.resolve().parents):
                raise UnsafeOutputError(
                    f"--out {out!r} is or holds the input {argument}={value!r}, which writing there would "
                    "replace; pass another folder."
                )
        if self.folder.exists() and not self.folder.is_dir():
            raise UnsafeOutputError(f"--out {out!r} is a file, not a folder; pass a new or empty folder.")
        try:
            held = sorted(item.name for item in self.folder.iterdir()) if self.folder.is_dir() else []
        except OSError as error:  # a folder we may not list
            raise UnsafeOutputError(f"--out {out!r} cannot be read ({error}); pass another folder.") from error
        if held and not overwrite:
            raise UnsafeOutputError(
                f"--out {out!r} exists and is not empty (it holds {', '.join(held[:5])}); pass a new or empty "
                f"folder, or --overwrite to replace its {', '.join(entries)} (other files are kept)."
            )
        existing = next(parent for parent in (where, *where.parents) if parent.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UnsafeOutputError(f"--out {out!r} cannot be written ({existing} is not a writable folder).")

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """A new, empty folder to write the entries into; they are moved into DIR when the block ends."""
        existed = self.folder.is_dir()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".eva-staging-", dir=self.folder))
            (staging / "new").mkdir()
            (staging / "old").mkdir()
        except OSError as error:
            raise UnsafeOutputError(f"--out {str(self.folder)!r} cannot be written ({error}).") from error
        try:
            yield staging / "new"
            for item in sorted((staging / "new").iterdir()):
                _replace(self.folder / item.name, item, staging / "old" / item.name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if not existed:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()  # only if still empty
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _replace(target: Path, new: Path, aside: Path) -> None:
    """Rename ``new`` to ``target``; an existing ``target`` is first renamed to ``aside`` (deleted with the
    staging folder), and renamed back if ``new`` cannot take its place."""
    old = target.exists() or target.is_symlink()
    if old:
        target.rename(aside)
    try:
        new.rename(target)
    except BaseException:
        if old:
            aside.rename(target)
        raise


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "fit": run_fit,
    "plan": run_plan,
    "report": run_report,
    "plugins": run_plugins,
    "reallocate": run_reallocate,
}
"""Each sub-command's function."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eva-lora`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Errors print one line, ``eva-lora: error: ...``, on stderr (exit status 1) unless ``--debug`` asks for
    the traceback; warnings print as ``eva-lora: warning: ...``.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format=f"{PROG}: %(name)s: %(message)s")
    if not args.debug:  # --debug shows everything, a fit's progress lines in a batch job included
        logging.getLogger("eva_core.fitting.feed").setLevel(logging.INFO)
        _quiet_transformers()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        if not args.debug:  # library deprecations are for developers, not for a command-line user
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = _show_warning
        try:
            return int(COMMANDS[args.command](args))
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # the command line's one catch-all: every error becomes one line
            if args.debug:
                traceback.print_exc()
            print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
            return 1


def _quiet_transformers() -> None:
    """Keep the output to eva's lines: no transformers load reports or weight-loading bars (``--debug``
    keeps them). Through the environment if transformers is not imported yet, else its logging module."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is not None and os.environ["TRANSFORMERS_VERBOSITY"] == "error":
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or "(no message)"
    if isinstance(error, EvaError):
        return text
    return f"{type(error).__name__}: {text} (run with --debug for the traceback)"


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    text = " ".join(str(message).split())
    print(f"{PROG}: warning: {text} [{category.__name__}]", file=file or sys.stderr)
