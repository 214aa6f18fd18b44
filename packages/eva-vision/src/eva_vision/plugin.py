"""The ``vision`` eva plugin: which layers of an image model EVA adapts, which rows they give, and this
domain's defaults.

Claims transformers DINOv2 / DINOv2-with-registers / ViT models, timm ``VisionTransformer``s and
convnets built of ``nn.Conv2d`` (see :mod:`eva_vision.architectures`); never text models.

Rows: a ViT linear gives one row per token (CLS, registers and patches by default; an
:class:`eva_vision.ImageBatch` can restrict them to patches or CLS), layer_input (B, T, d_in) ->
(N = B*T, d_in). A ``Conv2d`` gives one row per receptive field, layer_input (B, C_in, H, W) ->
(N = B*H_out*W_out, C_in*k_h*k_w) (:mod:`eva_vision.patches`).

The ``eva-lora fit`` hooks (model aliases, image files) live in :mod:`eva_vision.cli`; they are re-exported
here because the ``eva`` entry point names this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from torch import nn

from eva_core import PreparedBatch, RowsFn, hookimpl
from eva_core.capture.rows import token_rows
from eva_core.errors import UnsupportedLayerError

from .architectures import head_modules, model_kind, target_modules
from .batches import prepare
from .cli import eva_cli_batches as eva_cli_batches
from .cli import eva_cli_load_model as eva_cli_load_model
from .patches import adapter_support, conv_rows_fn

if TYPE_CHECKING:
    from eva_core import EvaConfig

__all__ = [
    "DEFAULT_CONFIG",
    "eva_claims_model",
    "eva_cli_batches",
    "eva_cli_load_model",
    "eva_default_config",
    "eva_layer_rows",
    "eva_lora_fields",
    "eva_prepare_batch",
    "eva_target_modules",
]

DEFAULT_CONFIG: Mapping[str, Any] = MappingProxyType({"rank": 8, "rho": 2.0, "whiten": True})
"""The :class:`eva_core.EvaConfig` fields of an image model unless the caller sets them: the budget ``8 * L``
shared with ``rho = 2``, components stable at cosine 0.99, and whitened ``A`` rows (``A x`` has unit
variance per component), as the EVA authors recommend for vision. Stated here only; ``eva_core.init``,
``eva_vision.init`` and ``eva-lora fit`` all read it through :func:`eva_default_config`."""


@hookimpl
def eva_claims_model(model: nn.Module) -> bool:
    """Image models of :func:`eva_vision.architectures.model_kind`; not a ``PeftModel`` (EVA fits the base)."""
    return not hasattr(model, "peft_config") and model_kind(model) is not None


@hookimpl
def eva_default_config(model: nn.Module) -> Mapping[str, Any] | None:
    """:data:`DEFAULT_CONFIG`, for every image model."""
    return dict(DEFAULT_CONFIG)


@hookimpl
def eva_lora_fields(model: nn.Module, targets: Sequence[str]) -> Mapping[str, Any] | None:
    """The classification head (transformers ``classifier``, timm ``head``, a CNN's ``classifier``/``fc``/
    ``head``/``_fc``) in ``modules_to_save``, so it trains in full; nothing when the model has none."""
    heads = head_modules(model)
    return {"modules_to_save": heads} if heads else {}


@hookimpl
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    return target_modules(model) or None


@hookimpl
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    """Images (B, C, H, W), ``(images, labels)``, ``{"pixel_values": ...}`` or ``ImageBatch``: all rows count
    (images have no padding) unless an ``ImageBatch`` restricts the tokens.

    Raises:
        UnsupportedBatchError: the batch holds no image tensor.
    """
    return prepare(batch, model)


@hookimpl
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    """Token rows for ``nn.Linear``; receptive-field rows for an ``nn.Conv2d`` peft can adapt.

    Raises:
        UnsupportedLayerError: a targeted ``Conv2d`` with groups > 1, dilation or a non-zero padding mode.
    """
    if isinstance(module, nn.Conv2d):
        reason = adapter_support(module)
        if reason is not None:
            raise UnsupportedLayerError(
                f"target_modules selects {name!r}, a Conv2d with {reason}; EVA's components would describe "
                "inputs its LoRA adapter never sees. Leave it out of target_modules."
            )
        return conv_rows_fn(module)
    if isinstance(module, nn.Linear):
        return token_rows
    return None
