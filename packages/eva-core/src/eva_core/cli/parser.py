"""The ``eva-lora`` command line's arguments: five sub-commands, ``fit``, ``plan``, ``report``, ``plugins`` and
``reallocate``."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from .. import __version__

__all__ = ["PROG", "build_parser"]

PROG = "eva-lora"
"""The command's name: the console script eva-core installs (``[project.scripts]``), in usage lines and messages.
Not ``eva``: another package on the index installs a command of that name."""

_EPILOG = f"Run `{PROG} COMMAND --help` for a command's options, or `python -m eva_core` where {PROG} is not on PATH."


def build_parser() -> argparse.ArgumentParser:
    """The ``eva-lora`` parser; each sub-command sets ``command`` to its name (:data:`eva_core.cli.main.COMMANDS`)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    parser = argparse.ArgumentParser(
        prog=PROG, description="Explained Variance Adaptation: data-driven LoRA initialization.", epilog=_EPILOG
    )
    parser.add_argument("--version", action="version", version=f"eva-core {__version__}")
    parser.add_argument("--debug", action="store_true", default=False, help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_fit(sub.add_parser("fit", parents=[common], help=_FIT_HELP))
    _add_plan(sub.add_parser("plan", parents=[common], help=_PLAN_HELP))

    report = sub.add_parser("report", parents=[common], help="render a saved state as an HTML page with PNG charts")
    report.add_argument("state_dir", metavar="STATE_DIR", help="an `eva-lora fit --out` folder or a saved state folder")
    report.add_argument("--out", required=True, metavar="DIR", help="write DIR/report.html and the PNG charts")
    report.add_argument("--title", help="the page title")
    _add_overwrite(report, "report.html and its charts")
    report.set_defaults(command="report")

    plugins = sub.add_parser("plugins", parents=[common], help="list the installed eva domains")
    plugins.set_defaults(command="plugins")

    realloc = sub.add_parser(
        "reallocate", parents=[common], help="re-budget the ranks of a saved state (no data, no model)"
    )
    realloc.add_argument(
        "state_dir", metavar="STATE_DIR", help="an `eva-lora fit --out` folder or a saved state folder"
    )
    realloc.add_argument("--rank", "-r", type=_RANK, help="the new mean rank")
    realloc.add_argument("--rho", type=_RHO, help="the new cap factor")
    realloc.add_argument(
        "--redistribution", choices=("explained_variance_ratio", "explained_variance", "uniform"), help="the score"
    )
    realloc.add_argument("--out", required=True, metavar="DIR", help="write the new state to DIR/state")
    _add_overwrite(realloc, "state")
    realloc.set_defaults(command="reallocate")
    return parser


_FIT_HELP = "fit EVA on a model and a data file; save the state and a peft adapter"


def _add_fit(fit: argparse.ArgumentParser) -> None:
    """``eva-lora fit``'s arguments: a flag left out keeps the domain's default (``eva_default_config``)."""
    fit.add_argument("model", metavar="MODEL", help="a model folder, an alias (minilm, smollm2) or module:factory")
    fit.add_argument(
        "data",
        metavar="DATA",
        help="a data file or folder the domain reads (GLUE .tsv, GSM8K .jsonl, .pt), or a task alias",
    )
    fit.add_argument(
        "--domain", help="the eva domain to use (see `eva-lora plugins`); default: the one that claims the loaded model"
    )
    fit.add_argument("--out", required=True, metavar="DIR", help="write DIR/state and DIR/adapter")
    fit.add_argument("--rank", "-r", type=_RANK, help="r, the mean LoRA rank per layer (default: the domain's)")
    fit.add_argument("--rho", type=_RHO, help="a layer may take up to round(rho*r) ranks (default: the domain's)")
    rule = fit.add_mutually_exclusive_group()  # each selects its own stopping rule
    rule.add_argument(
        "--target-error",
        type=_TARGET_ERROR,
        help="stop each layer by its estimated subspace error instead, once within this (e.g. 0.3)",
    )
    rule.add_argument(
        "--tau", type=_TAU, help="stop a layer once its components' |cos| >= tau (the default rule, 0.99)"
    )
    fit.add_argument(
        "--max-batches", type=_COUNT, help="stop after this many batches (default: the domain's max_steps)"
    )
    fit.add_argument("--batch-size", type=_COUNT, default=16, help="examples per batch (default 16)")
    fit.add_argument(
        "--targets", metavar="REGEX", type=_regex, help="target modules (a regex); default: the domain's choice"
    )
    fit.add_argument("--seed", type=_SEED, help="seed of the eigensolver's start (default: the domain's)")
    fit.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        help="scale each A row by 1/std of its projection (default: the domain's; eva-vision whitens)",
    )
    fit.add_argument(
        "--option",
        "-o",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="a domain setting, repeatable (nlu: task=sst2, max_length=128; llm: template=plain, max_length=512)",
    )
    fit.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    _add_overwrite(fit, "state and adapter folders")
    fit.set_defaults(command="fit")


_PLAN_HELP = "predict a fit's memory and cost per layer from the model's configuration alone (no weights, no data)"


def _add_plan(plan: argparse.ArgumentParser) -> None:
    """``eva-lora plan``'s arguments: the model and a batch shape, and the settings that change the plan."""
    plan.add_argument("model", metavar="MODEL", help="a model folder or its config.json (no weights are read)")
    plan.add_argument("--domain", help="the eva domain to use; default: the first installed one that builds MODEL")
    plan.add_argument("--batch-size", type=_COUNT, default=16, help="examples per batch (default 16, as fit's)")
    plan.add_argument("--seq-len", type=_COUNT, default=512, help="tokens per example (default 512)")
    plan.add_argument("--rank", "-r", type=_RANK, help="r, the mean LoRA rank per layer (default: the domain's)")
    plan.add_argument("--rho", type=_RHO, help="a layer may take up to round(rho*r) ranks (default: the domain's)")
    plan.add_argument(
        "--targets", metavar="REGEX", type=_regex, help="target modules (a regex); default: the domain's choice"
    )
    plan.add_argument(
        "--statistics",
        choices=("auto", "exact", "sketch"),
        help="exact d_in x d_in statistics where cheap enough (auto, the default), wherever they fit (exact), or "
        "a sketch everywhere",
    )
    plan.add_argument(
        "--gram-memory",
        type=_bytes,
        metavar="BYTES",
        help="memory for the exact statistics, e.g. 4GiB (default: a quarter of the device's free memory)",
    )
    plan.add_argument("--world-size", type=_COUNT, default=1, help="ranks of a distributed fit (default 1)")
    plan.add_argument("--device", default=None, help="where the fit will run, for the default budget (e.g. cuda)")
    plan.add_argument(
        "--option", "-o", action="append", type=_key_value, metavar="KEY=VALUE", help="a domain setting, repeatable"
    )
    plan.set_defaults(command="plan")


def _add_overwrite(command: argparse.ArgumentParser, written: str) -> None:
    command.add_argument(
        "--overwrite",
        action="store_true",
        help=f"write into a DIR that is not empty, replacing its {written} (other files in DIR are kept)",
    )


# Value checks: a bad value is a usage error naming the option (exit status 2), before any work. The
# ranges are EvaConfig's; the upper bounds keep every value in the C integer types torch takes.
_INT_MAX = 2**31 - 1


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected an integer in [{low}, {high}]")
        return value

    parse.__name__ = "integer"
    return parse


def _number(low: float, high: float, meaning: str, open_interval: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        inside = low < value < high if open_interval else low <= value <= high
        if not (math.isfinite(value) and inside):
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected {meaning}")
        return value

    parse.__name__ = "number"
    return parse


_RANK = _integer(1, _INT_MAX)
_COUNT = _integer(1, _INT_MAX)
_SEED = _integer(0, 2**63 - 1)
_RHO = _number(1.0, float(_INT_MAX), "a number >= 1 (1 keeps every layer at the mean rank)")
_TAU = _number(0.0, 1.0, "a number in [0, 1], e.g. 0.99")
_TARGET_ERROR = _number(0.0, 1.0, "a number in (0, 1), e.g. 0.3", open_interval=True)


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression ({error})") from None
    return text


_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6,
          "gb": 10**9, "tb": 10**12}  # fmt: skip


def _bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = _UNITS.get(match[2].lower()) if match else None
    if match is None or unit is None:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; expected a size such as 4GiB, 512MiB or 1000000")
    return int(float(match[1]) * unit)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; write KEY=VALUE, e.g. --option task=sst2")
    return key.strip(), value
