"""``eva``: the four commands, and the one place errors become a line on stderr and an exit status.

Each command takes the parsed arguments (:mod:`.parser`), prints a short summary to stdout and returns the
exit status; errors are raised and turned into one line on stderr by :func:`main`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

from eva_core import EvaState, apply, fit  # the command line is a client of the public API
from eva_core.errors import EvaError, InvalidConfigError, MissingModelError, MissingStateError, UnreadableDataError

from .domains import CliDomains, installed_plugins
from .parser import build_parser

__all__ = [
    "ADAPTER_DIR",
    "COMMANDS",
    "FIT_FLAGS",
    "STATE_DIR",
    "find_state",
    "main",
    "run_fit",
    "run_plugins",
    "run_reallocate",
    "run_report",
]

STATE_DIR = "state"
"""Sub-folder of ``--out`` holding the saved :class:`EvaState`."""
ADAPTER_DIR = "adapter"
"""Sub-folder of ``eva fit --out`` holding the peft adapter (``PeftModel.from_pretrained`` reads it)."""

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


def run_fit(args: argparse.Namespace) -> int:
    """``eva fit MODEL DATA``: load, fit, save the state and the adapter, print a summary.

    The domain and its defaults are chosen as ``eva_core.fit`` chooses them (``--domain``, else the plugin
    that claims the loaded model); a flag that is not given keeps the domain's default."""
    options = _options(args.option)
    _check_data(args.data)
    _check_model(args.model)
    domains = CliDomains()
    loaded = domains.load_model(args.model, args.data, options, args.domain)
    hooks = domains.for_model(loaded, args.domain)
    config = hooks.config(loaded.model, None, {**_given(args), "domain": hooks.domain})
    rows = config.max_steps * args.batch_size
    batches = domains.batches(hooks, args.data, loaded, args.batch_size, rows, options)
    state = fit(loaded.model, batches, config, plugins=domains.manager)
    state.extra["cli"] = {
        "model": args.model,
        "data": args.data,
        "domain": hooks.domain,
        "batch_size": args.batch_size,
        "options": dict(options),
    }
    out = Path(args.out)
    state.save(out / STATE_DIR)
    peft_model = apply(loaded.model, state, loaded.lora_config, plugins=domains.manager)
    peft_model.save_pretrained(str(out / ADAPTER_DIR))
    _print_summary(state, f"EVA fit of {args.model} on {args.data} (domain {hooks.domain})")
    print(f"state:   {out / STATE_DIR}")
    print(f"adapter: {out / ADAPTER_DIR}  (peft.PeftModel.from_pretrained(base_model, this folder))")
    return 0


FIT_FLAGS: Mapping[str, str] = {
    "rank": "rank",
    "rho": "rho",
    "tau": "tau",
    "max_batches": "max_steps",
    "targets": "target_modules",
    "seed": "seed",
    "whiten": "whiten",
}
"""``eva fit`` flags (argparse names) and the :class:`EvaConfig` fields they set; ``None`` (not given) keeps
the domain's default."""


def _given(args: argparse.Namespace) -> dict[str, object]:
    """The :class:`EvaConfig` fields the command line sets: every given flag of :data:`FIT_FLAGS`, and the
    progress bar."""
    given: dict[str, object] = {field: getattr(args, flag) for flag, field in FIT_FLAGS.items()}
    given = {field: value for field, value in given.items() if value is not None}
    return {**given, "progress": not args.no_progress}


def run_reallocate(args: argparse.Namespace) -> int:
    """``eva reallocate STATE_DIR``: re-budget the ranks of a saved state, offline."""
    folder = find_state(args.state_dir)
    state = EvaState.load(folder)
    new = state.reallocate(rank=args.rank, rho=args.rho, redistribution=args.redistribution)
    saved = new.save(Path(args.out) / STATE_DIR)
    changed = sum(new.ranks[name] != state.ranks[name] for name in new.ranks)
    print(
        f"reallocated {folder}: rank {state.config.rank} -> {new.config.rank}, rho {state.config.rho} -> "
        f"{new.config.rho}; {changed} of {len(new.ranks)} layers changed rank"
    )
    _print_summary(new, "new ranks")
    print(f"state:   {saved}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``eva report STATE_DIR``: write ``report.html`` and its PNG charts."""
    from ..report import write_report

    folder = find_state(args.state_dir)
    page = write_report(EvaState.load(folder), args.out, title=args.title or f"EVA report: {folder}")
    print(f"report: {page}")
    return 0


def run_plugins(args: argparse.Namespace) -> int:
    """``eva plugins``: the installed domains; exit status 1 when one fails to load."""
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
    """The folder holding a saved state: ``path`` itself or its ``state/`` sub-folder (an ``eva fit --out``).

    Raises:
        MissingStateError: neither holds one.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MissingStateError(f"STATE_DIR={path!r} is not a folder; pass the --out folder of `eva fit`.")
    for candidate in (folder, folder / STATE_DIR):
        if (candidate / "eva_state.json").is_file():
            return candidate
    raise MissingStateError(
        f"STATE_DIR={path!r} holds no saved EVA state (no eva_state.json there or in {STATE_DIR}/); pass the "
        "--out folder of `eva fit` or a folder written by EvaState.save()."
    )


def _print_summary(state: EvaState, title: str) -> None:
    ranks = list(state.ranks.values())
    converged = len(state.layers) - len(state.not_converged)
    rows = max((layer.rows for layer in state.layers.values()), default=0)
    print(f"{title}: {state.steps} batches, {state.seconds:.1f} s")
    print(
        f"layers:  {len(ranks)} targeted, {converged} converged (tau={state.config.tau}), up to {rows} rows per layer"
    )
    print(
        f"ranks:   total {sum(ranks)} = {state.config.rank} x {len(ranks)} layers, min {min(ranks, default=0)}, "
        f"max {max(ranks, default=0)} (cap round(rho*r) = {state.config.max_components})"
    )


def _options(pairs: list[str] | None) -> Mapping[str, str]:
    options: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidConfigError(f"--option {pair!r} is invalid; write KEY=VALUE, e.g. --option task=sst2")
        options[key.strip()] = value
    return options


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


COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "fit": run_fit,
    "report": run_report,
    "plugins": run_plugins,
    "reallocate": run_reallocate,
}
"""Each sub-command's function."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eva`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Errors print one line, ``eva: error: ...``, on stderr (exit status 1) unless ``--debug`` asks for
    the traceback; warnings print as ``eva: warning: ...``.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="eva: %(name)s: %(message)s")
    if not args.debug:
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
            print("eva: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # the command line's one catch-all: every error becomes one line
            if args.debug:
                traceback.print_exc()
            print(f"eva: error: {_one_line(error)}", file=sys.stderr)
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
    print(f"eva: warning: {text} [{category.__name__}]", file=file or sys.stderr)
