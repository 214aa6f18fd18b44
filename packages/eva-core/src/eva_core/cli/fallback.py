"""The command line's built-in plugin: models given as ``module:factory`` and batches saved with
``torch.save`` (``.pt``), for any ``nn.Module`` without a domain package.

Every hook is ``trylast``, so a domain plugin's answer wins.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contract import LoadedModel, hookimpl
from ..errors import InvalidConfigError, MissingModelError, UnreadableDataError

__all__ = ["NAME", "eva_cli_batches", "eva_cli_load_model"]

NAME = "cli-fallback"
"""The name this plugin is registered under (not a domain: ``--domain generic`` selects it)."""

_FACTORY = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):(?P<attr>[A-Za-z_][\w.]*)$")


@hookimpl(trylast=True)
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """``package.module:factory``: import the module and call ``factory()``, which returns an
    ``nn.Module`` or a :class:`~eva_core.hookspecs.LoadedModel`."""
    match = _FACTORY.match(model)
    if match is None or Path(model).exists():
        return None
    module_name, attr = match["module"], match["attr"]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise MissingModelError(
                f"MODEL={model!r}: no module {module_name!r} is importable; check the name, or add its folder "
                "to PYTHONPATH."
            ) from error
        raise
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
    if not callable(factory):
        raise MissingModelError(f"MODEL={model!r}: module {module_name!r} has no callable {attr!r}.")
    built = factory()
    if isinstance(built, LoadedModel):
        return built
    if not isinstance(built, nn.Module):
        raise InvalidConfigError(
            f"MODEL={model!r}: {attr}() returned a {type(built).__name__}; it must return an nn.Module "
            "(or an eva_core.hookspecs.LoadedModel)."
        )
    return LoadedModel(model=built.eval())


@hookimpl(trylast=True)
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """A ``.pt`` file holding a list of ready batches (tensors, tuples or dicts of tensors), as
    ``fit`` takes them; read with ``weights_only=True`` (no pickled code). ``batch_size`` does not
    re-batch them; ``rows`` keeps the first ``ceil(rows / batch_size)`` batches."""
    if Path(data).suffix.lower() != ".pt":
        return None
    try:
        items = torch.load(data, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a corrupt or non-tensor file
        raise UnreadableDataError(
            f"DATA={data!r} is not a tensor file torch.load(weights_only=True) can read ({error}); save a list "
            "of batches with torch.save."
        ) from error
    if isinstance(items, (torch.Tensor, Mapping)):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise UnreadableDataError(
            f"DATA={data!r} holds a {type(items).__name__}; save a non-empty list of batches "
            "(tensors, tuples or dicts of tensors) with torch.save."
        )
    kept = list(items)
    if rows is not None:
        kept = kept[: max(1, math.ceil(rows / batch_size))]
    return kept
