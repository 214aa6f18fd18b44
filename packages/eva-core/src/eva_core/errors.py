"""Exceptions and warnings raised by EVA.

Every error subclasses :class:`EvaError` and the builtin it behaves like, so callers can catch either
``EvaError`` or, say, ``ValueError``. Messages name the argument, the offending value and the fix.
"""

from __future__ import annotations

import sys
import warnings
from types import FrameType
from typing import cast

__all__ = [
    "CheckpointMismatchError",
    "DistributedFitError",
    "DomainMismatchError",
    "GenericFallbackWarning",
    "AmbiguousDomainError",
    "EmptyDataError",
    "EvaError",
    "EvaWarning",
    "InconsistentSharedInputError",
    "InvalidConfigError",
    "MetaDeviceError",
    "MissingDataError",
    "MissingExtraError",
    "MissingModelError",
    "MissingStateError",
    "NoVarianceError",
    "NonFiniteActivationError",
    "NotConvergedWarning",
    "PluginLoadError",
    "ReallocationError",
    "StateFileError",
    "TooFewRowsWarning",
    "UnknownDomainError",
    "UnreadableDataError",
    "UnsafeOutputError",
    "UnsupportedBatchError",
    "UnsupportedLayerError",
    "NoTargetLayersError",
    "warn",
]


class EvaError(Exception):
    """Base class of every error raised by eva-core and its domain packages."""


class InvalidConfigError(EvaError, ValueError):
    """A configuration field holds a value outside its valid range."""


class EmptyDataError(EvaError, ValueError):
    """The batch iterable yielded nothing, or no row survived the masks."""


class MissingDataError(EvaError, FileNotFoundError):
    """A data file or folder eva reads (or a cached artifact it needs) is missing; the message names the
    environment variable or the command that provides it."""


class DistributedFitError(EvaError, RuntimeError):
    """Another rank of a distributed fit failed, so this rank stopped too."""


class CheckpointMismatchError(EvaError, ValueError):
    """A checkpoint was written by a fit with a different config, model, data or number of ranks."""


class NoTargetLayersError(EvaError, ValueError):
    """No module of the model matched the target selection."""


class UnsupportedBatchError(EvaError, TypeError):
    """A batch has a type that no registered plugin knows how to feed to the model."""


class UnsupportedLayerError(EvaError, TypeError):
    """A targeted layer is of a type whose inputs no installed plugin can turn into rows."""


class NonFiniteActivationError(EvaError, ValueError):
    """A layer received NaN or infinite inputs."""


class InconsistentSharedInputError(EvaError, RuntimeError):
    """Two layers shared one input tensor on the first batch but not on a later one."""


class PluginLoadError(EvaError, ImportError):
    """A plugin registered under the ``eva`` entry-point group failed to load."""


class AmbiguousDomainError(EvaError, ValueError):
    """More than one domain plugin claims the model and none was picked."""


class ReallocationError(EvaError, ValueError):
    """A saved state holds too few components for the requested budget."""


class UnknownDomainError(EvaError, ValueError):
    """``eva-lora fit --domain`` names no installed eva plugin; the message lists the installed ones."""


class MissingModelError(EvaError, FileNotFoundError):
    """``eva-lora fit``'s MODEL is a path that does not exist, or no installed domain can load it."""


class UnreadableDataError(EvaError, ValueError):
    """``eva-lora fit``'s DATA is missing, unreadable, or of a kind the chosen domain does not read."""


class MissingStateError(EvaError, FileNotFoundError):
    """A folder given to ``eva-lora report`` / ``eva-lora reallocate`` holds no saved :class:`eva_core.EvaState`."""


class MissingExtraError(EvaError, ImportError):
    """An optional dependency of a feature is not installed; the message names the pip extra."""


class UnsafeOutputError(EvaError, ValueError):
    """An ``eva-lora`` command's ``--out`` cannot be written without losing something: it exists and is not empty
    (and ``--overwrite`` was not given), it is or holds the command's input, it is a file, or it cannot be
    written. Raised before any work."""


class StateFileError(EvaError, ValueError):
    """A saved state or checkpoint file cannot be written or read as it is: a value JSON cannot store, a
    corrupt or truncated file, a file that is not ours, or contents a fit cannot produce (NaN, ranks over
    the budget, layers missing); the message names the file and the layer."""


class NoVarianceError(EvaError, ValueError):
    """No targeted layer's input varies (constant or all-zero rows), so no component carries signal."""


class MetaDeviceError(EvaError, ValueError):
    """The model given to ``fit``, ``init`` or ``apply`` holds a parameter or buffer on the meta device
    (a shape without values); the message names it and how to load the real weights. Also raised by ``plan``
    when the model's forward reads values, which its meta run does not have."""


class EvaWarning(UserWarning):
    """Something the user can fix: the result is still usable but may not be what was meant."""


class NotConvergedWarning(EvaWarning):
    """The fit stopped (``max_steps`` or data exhausted) before every layer converged."""


class TooFewRowsWarning(EvaWarning):
    """A layer saw fewer rows than the components it was asked for; its cap was lowered."""


class DomainMismatchError(EvaError, TypeError):
    """A domain's ``init`` (``eva_vision.init``...) was given a model that domain does not serve; the message
    names the model class and the package (or ``eva_core.init``) that serves it."""


class GenericFallbackWarning(EvaWarning):
    """No domain plugin chose the layers of the model, so eva-core's generic plugin did (every ``nn.Linear``
    outside the output heads). Pass ``target_modules`` to choose them yourself, or install a domain package."""


def warn(message: str, category: type[Warning] = EvaWarning) -> None:
    """Warn with the location of the first caller outside eva packages (``eva_core``, ``eva_llm``...)."""
    level, frame = 2, cast("FrameType | None", sys._getframe(1))
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(("eva_", "torch.")):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
