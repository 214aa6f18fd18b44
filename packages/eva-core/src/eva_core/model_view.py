"""What eva sees of a user's model and how it leaves it intact: its layers as the plain model has them,
without the peft adapters it may already carry; a check that its weights hold data (not the meta device);
and a rollback of whatever a failing block did to its structure.

peft wraps an adapted layer (``blocks.0.q`` becomes a ``lora.Linear`` whose ``base_layer`` is the
original ``nn.Linear``) and a saved head (a ``ModulesToSaveWrapper`` around ``original_module``). peft's
own EVA measures such a model with its adapters disabled; here the wrappers are looked through, so the
layers keep the names the plain model gives them (``blocks.0.q``, not ``blocks.0.q.base_layer``) and a
domain plugin selects targets exactly as on the plain model.

peft injects adapters in place: it swaps modules in their parents, sets attributes (``peft_config`` on the
model, ``r``/``scaling``/... on each wrapped layer), adds entries to ``ModuleDict``s and flips
``requires_grad``. A copy of the model would undo all that, but the model may be 7B parameters;
:class:`ModelSnapshot` records only the containers that hold the structure (each module's ``__dict__`` and
the dicts, lists and sets in it: ``_modules``, ``_parameters``, ``_buffers``, hook tables, peft's adapter
tables) and each parameter's ``requires_grad``. Tensors are kept by reference, never copied, so a rollback
gives back the very same parameter and buffer objects. Writing into an existing tensor's data is not
undone: the blocks guarded here only write into tensors they created.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from torch import nn

from .errors import MetaDeviceError

__all__ = [
    "ModelSnapshot",
    "base_model",
    "plain_modules",
    "require_materialized",
    "rolled_back",
    "without_adapters",
    "wrapped_layers",
]


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
    root = _base_layer(base_model(model))  # a bare wrapper (a lora.Linear alone) is its base layer
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


_CONTAINERS = (dict, list, set)


class ModelSnapshot:
    """The structure of every module of ``model``: its ``__dict__`` (shallow) and a shallow copy of each
    dict, list or set in it, plus every parameter's ``requires_grad``."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: list[tuple[nn.Module, dict[str, Any], dict[str, Any]]] = []
        for module in model.modules():
            attributes = dict(module.__dict__)
            contents = {key: _copy(value) for key, value in attributes.items() if isinstance(value, _CONTAINERS)}
            self.modules.append((module, attributes, contents))
        self.requires_grad = [(parameter, parameter.requires_grad) for parameter in model.parameters()]

    def restore(self) -> None:
        """Put every recorded module back as it was: attributes added since are removed, replaced ones
        reinstated, and the recorded containers refilled in place (same objects, same order)."""
        for module, attributes, contents in self.modules:
            own = module.__dict__
            for key in [key for key in own if key not in attributes]:
                del own[key]
            for key, value in attributes.items():
                if own.get(key, _MISSING) is not value:
                    own[key] = value
                if key in contents:
                    _refill(value, contents[key])
        for parameter, flag in self.requires_grad:
            parameter.requires_grad_(flag)


@contextlib.contextmanager
def rolled_back(model: nn.Module) -> Iterator[ModelSnapshot]:
    """Run the block; if it raises anything (``KeyboardInterrupt`` included), restore ``model``'s structure
    (:class:`ModelSnapshot`) before the exception propagates."""
    snapshot = ModelSnapshot(model)
    try:
        yield snapshot
    except BaseException:
        snapshot.restore()
        raise


_MISSING = object()


def _copy(value: dict[Any, Any] | list[Any] | set[Any]) -> dict[Any, Any] | list[Any] | set[Any]:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else set(value)


def _refill(container: Any, saved: dict[Any, Any] | list[Any] | set[Any]) -> None:
    """Give ``container`` back exactly the items of ``saved`` (an ``OrderedDict`` keeps its order)."""
    if isinstance(container, dict) and isinstance(saved, dict):
        container.clear()
        container.update(saved)
    elif isinstance(container, list):
        container[:] = saved
    elif isinstance(container, set):
        container.clear()
        container.update(saved)
