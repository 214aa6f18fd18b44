"""``rolled_back``: undo whatever a block did to a model's structure if it fails.

peft injects adapters in place: it swaps modules in their parents, sets attributes (``peft_config`` on the
model, ``r``/``scaling``/... on each wrapped layer), adds entries to ``ModuleDict``s and flips
``requires_grad``. A copy of the model would undo all that, but the model may be 7B parameters; this
records only the containers that hold the structure (each module's ``__dict__`` and the dicts, lists and
sets in it: ``_modules``, ``_parameters``, ``_buffers``, hook tables, peft's adapter tables) and each
parameter's ``requires_grad``. Tensors are kept by reference, never copied, so a rollback gives back the
very same parameter and buffer objects. Writing into an existing tensor's data is not undone: the blocks
guarded here only write into tensors they created.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

__all__ = ["ModelSnapshot", "rolled_back"]

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
