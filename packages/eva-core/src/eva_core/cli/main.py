"""``eva``: the argument parser and the one place errors become a line on stderr and an exit status."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..errors import EvaError
from . import commands

__all__ = ["build_parser", "main"]

_EPILOG = "Run `eva COMMAND --help` for a command's options; docs/cli.md has an example session."


def build_parser() -> argparse.ArgumentParser:
    """The ``eva`` parser; each sub-command sets ``run`` to its function in :mod:`.commands`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    parser = argparse.ArgumentParser(
        prog="eva", description="Explained Variance Adaptation: data-driven LoRA initialization.", epilog=_EPILOG
    )
    parser.add_argument("--version", action="version", version=f"eva-core {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fit = sub.add_parser(
        "fit", parents=[common], help="fit EVA on a model and a data file; save the state and a peft adapter"
    )
    fit.add_argument("model", metavar="MODEL", help="a model folder, an alias (minilm, smollm2) or module:factory")
    fit.add_argument(
        "data",
        metavar="DATA",
        help="a data file or folder the domain reads (GLUE .tsv, GSM8K .jsonl, .pt), or a task alias",
    )
    fit.add_argument("--domain", help="the eva domain to use (see `eva plugins`); default: the first that loads MODEL")
    fit.add_argument("--out", required=True, metavar="DIR", help="write DIR/state and DIR/adapter")
    fit.add_argument("--rank", "-r", type=int, default=8, help="r, the mean LoRA rank per layer (default 8)")
    fit.add_argument("--rho", type=float, default=2.0, help="a layer may take up to round(rho*r) ranks (default 2)")
    fit.add_argument("--tau", type=float, default=0.99, help="convergence threshold of the cosine (default 0.99)")
    fit.add_argument("--max-batches", type=int, default=50, help="stop after this many batches (default 50)")
    fit.add_argument("--batch-size", type=int, default=16, help="examples per batch (default 16)")
    fit.add_argument("--targets", metavar="REGEX", help="target modules (a regex); default: the domain's choice")
    fit.add_argument("--seed", type=int, default=0, help="seed of the eigensolver's start (default 0)")
    fit.add_argument(
        "--whiten", action="store_true", help="scale each A row by 1/std of its projection (eva-vision's default)"
    )
    fit.add_argument(
        "--option",
        "-o",
        action="append",
        metavar="KEY=VALUE",
        help="a domain setting, repeatable (nlu: task=sst2, max_length=128; llm: template=plain, max_length=512)",
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    fit.set_defaults(run=commands.run_fit)

    report = sub.add_parser("report", parents=[common], help="render a saved state as an HTML page with PNG charts")
    report.add_argument("state_dir", metavar="STATE_DIR", help="an `eva fit --out` folder or a saved state folder")
    report.add_argument("--out", required=True, metavar="DIR", help="write DIR/report.html and the PNG charts")
    report.add_argument("--title", help="the page title")
    report.set_defaults(run=commands.run_report)

    plugins = sub.add_parser("plugins", parents=[common], help="list the installed eva domains")
    plugins.set_defaults(run=commands.run_plugins)

    realloc = sub.add_parser(
        "reallocate", parents=[common], help="re-budget the ranks of a saved state (no data, no model)"
    )
    realloc.add_argument("state_dir", metavar="STATE_DIR", help="an `eva fit --out` folder or a saved state folder")
    realloc.add_argument("--rank", "-r", type=int, help="the new mean rank")
    realloc.add_argument("--rho", type=float, help="the new cap factor")
    realloc.add_argument(
        "--redistribution", choices=("explained_variance_ratio", "explained_variance", "uniform"), help="the score"
    )
    realloc.add_argument("--out", required=True, metavar="DIR", help="write the new state to DIR/state")
    realloc.set_defaults(run=commands.run_reallocate)
    return parser


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
            return int(args.run(args))
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
