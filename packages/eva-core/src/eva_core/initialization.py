"""``init``: fit and apply in one call."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

from .adapters import apply, check_destination, check_lora_config
from .config import EvaConfig
from .fitting import fit
from .plugins import PluginManager, plugin_manager

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["init"]


def init(
    model: nn.Module,
    batches: Iterable[Any],
    config: EvaConfig | None = None,
    lora_config: LoraConfig | None = None,
    *,
    adapter_name: str = "default",
    plugins: PluginManager | None = None,
    **overrides: Any,
) -> PeftModel:
    """EVA-initialize LoRA adapters on ``model``: :func:`fit` over ``batches``, then :func:`apply`.

    The domain that claims ``model`` (eva-nlu for a BERT, eva-vision for a DINOv2...) supplies the default
    ``config`` and ``lora_config``, so ``eva_core.init(dinov2, loader)`` equals ``eva_vision.init(dinov2,
    loader)``. ``overrides`` replace single :class:`EvaConfig` fields, e.g. ``init(model, loader, rank=8,
    rho=1)``, and may hold :func:`fit`'s checkpoint arguments. A ``PeftModel`` that carries LoRA adapters
    is measured with them disabled and gets ``adapter_name`` beside them (as peft's EVA does).
    The returned model's ``eva_state`` attribute holds the :class:`EvaState` (ranks, spectra, steps).

    Transactional: ``model``, ``lora_config`` and ``adapter_name`` are checked before the fit, and on any
    error (an interrupt included) ``model`` is left exactly as it came in.
    """
    manager = plugins or plugin_manager()
    check_destination(model, adapter_name, "init")
    if lora_config is not None:
        check_lora_config(lora_config)
    state = fit(model, batches, config, plugins=manager, **overrides)
    return apply(model, state, lora_config, adapter_name, plugins=manager)  # sets peft_model.eva_state
