"""Which modules of a model a fit measures."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from .errors import NoTargetLayersError

__all__ = ["select_modules"]


def select_modules(model: nn.Module, targets: Sequence[str] | str) -> dict[str, nn.Module]:
    """The modules named by ``targets``, in model order, as peft matches ``target_modules``: a string
    is a regex that must match the whole name; a list entry matches a name equal to it or ending in
    ``"." + entry``.

    Raises:
        NoTargetLayersError: nothing matched; the message lists a few linear layers that exist.
    """
    if isinstance(targets, str):
        pattern = re.compile(targets)
        chosen = {name: module for name, module in model.named_modules() if name and pattern.fullmatch(name)}
    else:
        wanted = tuple(targets)
        chosen = {
            name: module
            for name, module in model.named_modules()
            if name and any(name == t or name.endswith("." + t) for t in wanted)
        }
    if not chosen:
        linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        hint = f"linear layers it has include {linear[:6]}" if linear else "it has no nn.Linear layer"
        raise NoTargetLayersError(
            f"target_modules={targets!r} matches no module of {type(model).__name__}; {hint}. Pass names "
            "(or name suffixes) from model.named_modules(), a regex, or None to let the domain plugin choose."
        )
    return chosen
