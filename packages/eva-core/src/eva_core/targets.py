"""Which modules of a model a fit measures."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from .errors import InvalidConfigError, NoTargetLayersError

__all__ = ["compile_pattern", "select_modules"]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, as peft compiles a ``target_modules`` string.

    Raises:
        InvalidConfigError: ``pattern`` is not a valid regular expression; the message names it.
    """
    try:
        return re.compile(pattern)
    except re.error as error:
        raise InvalidConfigError(
            f"target_modules={pattern!r} is not a valid regular expression ({error}); a string is a regex that "
            "must match a whole module name (e.g. r'.*\\.(q|v)_proj'), or pass a list of names."
        ) from error


def select_modules(model: nn.Module, targets: Sequence[str] | str) -> dict[str, nn.Module]:
    """The modules named by ``targets``, in model order, as peft matches ``target_modules``: a string
    is a regex that must match the whole name; a list entry matches a name equal to it or ending in
    ``"." + entry``. The root module (name ``""``) is never selected.

    Unlike peft, which only fails when no entry matches, every list entry must match some module: a
    misspelt entry would otherwise silently leave its layers out.

    Raises:
        InvalidConfigError: ``targets`` is a string that is not a valid regex.
        NoTargetLayersError: nothing matched, or a list entry matched nothing; the message names the
            entry and lists a few modules that exist.
    """
    named = [(name, module) for name, module in model.named_modules() if name]
    if isinstance(targets, str):
        pattern = compile_pattern(targets)
        chosen = {name: module for name, module in named if pattern.fullmatch(name)}
        if not chosen:
            raise NoTargetLayersError(f"target_modules={targets!r} matches no module of {_described(model)}")
        return chosen
    wanted = tuple(targets)
    chosen = {name: module for name, module in named if any(_matches(name, entry) for entry in wanted)}
    if not chosen:
        raise NoTargetLayersError(f"target_modules={targets!r} matches no module of {_described(model)}")
    missing = [entry for entry in wanted if not any(_matches(name, entry) for name in chosen)]
    if missing:
        raise NoTargetLayersError(
            f"target_modules entry {missing[0]!r} matches no module of {_described(model)}"
            + (f" (nor do {missing[1:]!r})" if len(missing) > 1 else "")
        )
    return chosen


def _matches(name: str, entry: str) -> bool:
    """peft's rule for a list entry: the whole name, or its last dotted parts."""
    return name == entry or name.endswith("." + entry)


def _described(model: nn.Module) -> str:
    """The model's class and a few of its module names, and the fix."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    names = linear or [name for name, _ in model.named_modules() if name]
    hint = (
        f"linear layers it has include {linear[:6]}" if linear else f"it has no nn.Linear layer; modules: {names[:6]}"
    )
    return (
        f"{type(model).__name__}; {hint}. Pass names (or name suffixes) from model.named_modules(), a regex, or "
        "None to let the domain plugin choose."
    )
