"""What eva sees of a user's model: its layers as the plain model has them, without the peft adapters it
may already carry, and a check that its weights hold data (not the meta device).

peft wraps an adapted layer (``blocks.0.q`` becomes a ``lora.Linear`` whose ``base_layer`` is the
original ``nn.Linear``) and a saved head (a ``ModulesToSaveWrapper`` around ``original_module``). peft's
own EVA measures such a model with its adapters disabled; here the wrappers are looked through, so the
layers keep the names the plain model gives them (``blocks.0.q``, not ``blocks.0.q.base_layer``) and a
domain plugin selects targets exactly as on the plain model.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from torch import nn

from .errors import MetaDeviceError

__all__ = ["base_model", "plain_modules", "require_materialized", "without_adapters", "wrapped_layers"]


def base_model(model: nn.Module) -> nn.Module:
    """The model a ``PeftModel`` wraps (``get_base_model()``), else ``model`` itself."""
    peft = sys.modules.get("peft")
    if peft is not None and isinstance(model, peft.PeftModel):
        return model.get_base_model()
    return model


def wrapped_layers(model: nn.Module) -> dict[str, nn.Module]:
    """name -> the peft wrapper (a ``LoraLayer``, a ``ModulesToSaveWrapper``...) for each wrapped layer of
    ``model``, outermost wrappers only; empty when peft was never imported (no model can carry one then)."""
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if _is_wrapper(module) and not any(name.startswith(outer + ".") for outer in found):
            found[name] = module
    return found


def plain_modules(model: nn.Module) -> dict[str, nn.Module]:
    """``named_modules()`` of ``model`` as if its peft wrappers were replaced by the layers they wrap:
    the same names as the plain model, each mapped to its base layer (adapters' own modules left out)."""
    result: dict[str, nn.Module] = {}
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str) -> None:
        module = _base_layer(module)
        if id(module) in seen:
            return
        seen.add(id(module))
        result[prefix] = module
        for name, child in module._modules.items():
            if child is not None:
                walk(child, f"{prefix}.{name}" if prefix else name)

    walk(base_model(model), "")
    return result


@contextlib.contextmanager
def without_adapters(model: nn.Module) -> Iterator[nn.Module]:
    """The base model of ``model`` with every peft wrapper swapped for the layer it wraps, for the block's
    duration: it then computes and is named as the plain model (adapters disabled, as peft's EVA measures
    a ``PeftModel``). The wrappers are put back on exit, whatever happens."""
    root = base_model(model)
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for name, wrapper in wrapped_layers(root).items():
            parent_name, _, key = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            swapped.append((parent, key, wrapper))
            parent._modules[key] = _base_layer(wrapper)
        yield root
    finally:
        for parent, key, wrapper in reversed(swapped):
            parent._modules[key] = wrapper


def require_materialized(model: nn.Module, call: str) -> None:
    """Refuse a model whose weights have no data. Modules under an accelerate hook (``_hf_hook``: offloaded
    or dispatched models) are exempt: their meta tensors are filled in by the hook for each call.

    Raises:
        MetaDeviceError: a parameter or buffer of ``model`` is on the meta device; names it.
    """
    managed: list[str] = []
    for prefix, module in model.named_modules():
        if any(prefix == outer or prefix.startswith(outer + ".") for outer in managed):
            continue
        if hasattr(module, "_hf_hook"):
            managed.append(prefix)
            continue
        for kind, named in (
            ("parameter", module.named_parameters(recurse=False)),
            ("buffer", module.named_buffers(recurse=False)),
        ):
            for name, tensor in named:
                if tensor.is_meta:
                    _refuse_meta(model, call, kind, f"{prefix}.{name}" if prefix else name)


def _refuse_meta(model: nn.Module, call: str, kind: str, name: str) -> None:
    raise MetaDeviceError(
        f"{call}(model=...) got a {type(model).__name__} whose {kind} {name!r} is on the meta device "
        "(it has a shape but no values, e.g. built under torch.device('meta') or loaded with "
        "low_cpu_mem_usage/device_map and not yet filled). Load the real weights first: "
        "from_pretrained(...) without a meta init, or model.to_empty(device=...) followed by "
        "model.load_state_dict(...)."
    )


def _is_wrapper(module: nn.Module) -> bool:
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    other = sys.modules.get("peft.utils.other")
    return (tuners is not None and isinstance(module, tuners.BaseTunerLayer)) or (
        other is not None and isinstance(module, getattr(other, "AuxiliaryTrainingWrapper", ()))
    )


def _base_layer(module: nn.Module) -> nn.Module:
    """The layer a peft wrapper wraps (through nested wrappers), else ``module``."""
    while _is_wrapper(module):
        inner = getattr(module, "original_module", None)
        if not isinstance(inner, nn.Module):
            inner = module.get_base_layer()  # type: ignore[operator]
        if inner is module:
            break
        module = inner
    return module
