"""What eva-core and its plugins exchange: the pluggy markers and the values the hooks pass.

The hooks themselves are specified in :mod:`eva_core.hookspecs`, which re-exports everything here, so a
plugin author reads one file. These names live apart so that the modules that only need a marker or a
value (the generic plugin, the input recorder, the command line's fallback) do not depend on the hook
specifications and, through them, on :class:`~eva_core.EvaConfig` and :class:`~eva_core.EvaState`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import torch
    from peft import LoraConfig
    from torch import nn

__all__ = ["PROJECT", "LoadedModel", "PreparedBatch", "RowsFn", "hookimpl", "hookspec"]

PROJECT = "eva"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RowsFn = Callable[["torch.Tensor", "torch.Tensor | None"], "tuple[torch.Tensor, torch.Tensor | None]"]
"""``(layer_input, row_mask) -> (rows, rows_mask)``: turns a layer's input (e.g. (B, T, d_in)) and the
batch's row mask (e.g. (B, T) bool, or None) into rows (N, d_in) and a mask (N,) bool or None."""


@dataclass(frozen=True)
class PreparedBatch:
    """One batch as the model takes it, with the mask of rows that feed the SVD.

    Attributes:
        args: positional arguments of ``model(*args, **kwargs)``.
        kwargs: keyword arguments.
        row_mask: (B, T) bool, true where a token/patch/timestep counts; ``None`` means all do.
    """

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    row_mask: torch.Tensor | None = None


@dataclass(frozen=True)
class LoadedModel:
    """A model loaded for ``eva-lora fit``, with what reading its data and saving its adapter need.

    Attributes:
        model: the base model, in eval mode, not yet wrapped by peft.
        processor: what turns the domain's raw data into model inputs (a tokenizer, an image processor),
            or ``None``; handed back to :func:`eva_cli_batches`.
        lora_config: dropout, alpha, ``task_type``, ``modules_to_save``... of the adapter ``eva-lora fit``
            saves (``r`` and the targets come from the fit); ``None`` (the usual answer) takes the
            domain's ``eva_lora_fields`` with ``lora_alpha = r``, as ``eva_core.apply`` does.
    """

    model: nn.Module
    processor: Any = None
    lora_config: LoraConfig | None = None
