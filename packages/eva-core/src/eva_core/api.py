"""``init``: fit and apply in one call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

from .adapters import apply
from .config import EvaConfig
from .fitting import fit

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["init"]


def init(
    model: nn.Module,
    batches: Iterable[Any],
    config: EvaConfig | None = None,
    lora_config: LoraConfig | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA adapters on ``model``: :func:`fit` over ``batches``, then :func:`apply`.

    ``overrides`` replace single :class:`EvaConfig` fields, e.g. ``init(model, loader, rank=8, rho=1)``.
    The returned model's ``eva_state`` attribute holds the :class:`EvaState` (ranks, spectra, steps).
    """
    state = fit(model, batches, config, **overrides)
    peft_model = apply(model, state, lora_config)
    peft_model.eva_state = state  # type: ignore[assignment]
    return peft_model
