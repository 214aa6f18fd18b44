"""What :func:`~eva_core.apply` and :func:`~eva_core.init` check before peft touches the model: the model
can take the adapter, the ``LoraConfig`` is one peft will not fail on halfway, and the state's rows fit
the model's layers. Each check raises before anything is changed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import InvalidConfigError
from .model_view import base_model, require_materialized, wrapped_layers

if TYPE_CHECKING:
    from .state import EvaState

__all__ = ["check_destination", "check_lora_config", "check_wrapped", "state_rows"]


def check_destination(model: nn.Module, adapter_name: str, call: str = "apply") -> None:
    """Refuse, before any work, a model that cannot receive adapter ``adapter_name``: weights on the meta
    device, a ``PeftModel`` of another kind or already holding that adapter, peft layers outside a
    ``PeftModel``, or an adapter name peft cannot use.

    Raises:
        InvalidConfigError, MetaDeviceError.
    """
    require_materialized(model, call)
    if not isinstance(adapter_name, str) or not adapter_name or "." in adapter_name or adapter_name in "lora_":
        raise InvalidConfigError(
            f"{call}(adapter_name={adapter_name!r}) is invalid: pass a non-empty name without dots that is not "
            "part of peft's 'lora_' prefix, e.g. adapter_name='default' or 'eva'."
        )
    from peft import PeftModel

    if isinstance(model, PeftModel):
        if model.peft_type != "LORA":
            raise InvalidConfigError(
                f"{call}(model=...) got a PeftModel with {model.peft_type} adapters; LoRA adapters cannot be added "
                "beside them. Pass the base model (model.get_base_model() with the adapters unloaded, or a fresh load)."
            )
        if adapter_name in model.peft_config:
            raise InvalidConfigError(
                f"{call}(adapter_name={adapter_name!r}): the PeftModel already has an adapter of that name (it has "
                f"{sorted(model.peft_config)}); pass another adapter_name (e.g. adapter_name='eva') to add an "
                "EVA-initialized adapter beside it, or pass the base model to start afresh."
            )
        return
    wrapped = wrapped_layers(model)
    if wrapped:
        name, layer = next(iter(wrapped.items()))
        raise InvalidConfigError(
            f"{call}(model=...) got a {type(model).__name__} that already carries peft layers (e.g. {name!r}, a "
            f"{type(layer).__name__}) but is not a PeftModel; pass the PeftModel holding them (the EVA adapter is "
            "then added beside them) or the model without adapters (a fresh load, or peft's unload())."
        )


def check_wrapped(model: nn.Module, names: Iterable[str]) -> None:
    """Refuse layers that an adapter ``model`` carries already saves whole (``modules_to_save``): peft
    cannot put LoRA into a ``ModulesToSaveWrapper``. Layers that carry LoRA already take one more.

    Raises:
        InvalidConfigError: names the layer.
    """
    from peft.tuners.lora import LoraLayer

    wrapped = wrapped_layers(base_model(model))
    for name in names:
        layer = wrapped.get(name)
        if layer is not None and not isinstance(layer, LoraLayer):
            raise InvalidConfigError(
                f"layer {name!r} of the state is a {type(layer).__name__} in the model (an adapter it carries saves "
                "it whole, modules_to_save), so it cannot take a LoRA adapter; fit with target_modules leaving it out, "
                "or give it rank 0 (EvaState.ranks)."
            )


def check_lora_config(lora_config: object) -> None:
    """Refuse a ``lora_config`` peft would fail on halfway through injecting (or that makes no adapter).

    Raises:
        InvalidConfigError: not a ``peft.LoraConfig``; ``r`` not an integer >= 1; ``lora_alpha`` not a
            finite number > 0; ``lora_dropout`` outside [0, 1).
    """
    from peft import LoraConfig

    if not isinstance(lora_config, LoraConfig):
        raise InvalidConfigError(f"lora_config={lora_config!r} must be a peft.LoraConfig or None.")
    r, alpha, dropout = lora_config.r, lora_config.lora_alpha, lora_config.lora_dropout
    checks = (
        ("r", r, _is_int(r) and r >= 1, "an integer >= 1 (apply sets the ranks from the state; r sets the scaling)"),
        ("lora_alpha", alpha, _is_number(alpha) and alpha > 0, "a finite number > 0"),
        ("lora_dropout", dropout, _is_number(dropout) and 0 <= dropout < 1, "a number in [0, 1)"),
    )
    for field, value, ok, expected in checks:
        if not ok:
            raise InvalidConfigError(f"lora_config.{field}={value!r} is invalid: expected {expected}.")


def state_rows(state: EvaState, modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    """name -> (r_l, d_in) LoRA ``A`` rows of each layer of rank > 0, once checked against ``modules``.

    Raises:
        InvalidConfigError: a layer the model lacks, a rank that is not an integer in [0, components
            stored], rows that are not finite or not as wide as the layer's input.
    """
    rows = {}
    for name, rank in state.ranks.items():
        spectrum = state.layers.get(name)
        stored = None if spectrum is None else spectrum.components.shape[0]
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0 or stored is None or rank > stored:
            raise InvalidConfigError(
                f"EvaState.ranks[{name!r}]={rank!r} is invalid: expected an integer in [0, {stored}] (the components "
                "stored for that layer); reallocate the state (state.reallocate(...)) or load it again."
            )
        if rank == 0:
            continue
        if name not in modules:
            near = [key for key in modules if key.endswith(name.rpartition(".")[2])][:4]
            raise InvalidConfigError(
                f"the state has layer {name!r}, which {type(modules['']).__name__} does not have (similar: {near}); "
                "apply a state fitted on this model, or fit again."
            )
        layer_rows = state.components(name)  # (r_l, d_in)
        width = _input_width(modules[name])
        if width is not None and layer_rows.shape[-1] != width:
            raise InvalidConfigError(
                f"layer {name!r}: the state holds components of width {layer_rows.shape[-1]} but the layer takes "
                f"inputs of width {width}; was the state fitted on a different model?"
            )
        if not bool(torch.isfinite(layer_rows).all()):
            raise InvalidConfigError(f"layer {name!r}: the state's components hold NaN or infinity; fit again.")
        rows[name] = layer_rows
    return rows


def _input_width(module: nn.Module) -> int | None:
    """The width of the rows a layer's LoRA ``A`` takes (d_in; C_in * k_h * k_w for a conv), if known."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels * math.prod(module.kernel_size)
    if isinstance(module, nn.Embedding):
        return module.num_embeddings
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor):
        return int(weight.shape[0])  # transformers' Conv1D stores W as (d_in, d_out)
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
