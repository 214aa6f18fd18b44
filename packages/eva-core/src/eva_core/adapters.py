"""``apply``: turn an :class:`EvaState` into a standard peft LoRA model."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .adapter_checks import check_destination, check_lora_config, check_wrapped, state_rows
from .errors import EvaError, EvaWarning, InvalidConfigError, warn
from .model_view import base_model, plain_modules, rolled_back
from .plugins import DomainHooks, PluginManager, plugin_manager
from .state import EvaState

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = [
    "apply",
    "check_destination",
    "check_lora_config",
    "check_wrapped",
    "domain_lora_config",
    "lora_config_for",
    "state_rows",
]


def domain_lora_config(
    lora_config: LoraConfig | None, domain_fields: Mapping[str, Any] | None, rank: int
) -> LoraConfig:
    """The adapters' ``LoraConfig`` before the ranks: the caller's ``lora_config`` with ``fan_in_fan_out=True``
    where the domain needs it (layers that store W as (d_in, d_out)), or, without one, the domain's fields
    (``eva_lora_fields``: heads, task type...) with ``r = lora_alpha = rank``.

    Raises:
        InvalidConfigError: ``lora_config`` is not a ``peft.LoraConfig``, or its ``r``, ``lora_alpha`` or
            ``lora_dropout`` is out of range.
    """
    from peft import LoraConfig  # peft (and transformers) load on first use: `import eva_core` stays light

    fields = dict(domain_fields or {})
    if lora_config is None:
        return LoraConfig(**{"r": rank, "lora_alpha": rank, **fields})
    check_lora_config(lora_config)
    if fields.get("fan_in_fan_out") and not lora_config.fan_in_fan_out:
        return dataclasses.replace(lora_config, fan_in_fan_out=True)
    return lora_config


def lora_config_for(
    state: EvaState, lora_config: LoraConfig | None = None, domain_fields: Mapping[str, Any] | None = None
) -> LoraConfig:
    """The ``LoraConfig`` that realises ``state``: only layers with rank > 0 targeted, per-layer ranks in
    ``rank_pattern`` and, when ``state.config.adjust_scaling_factors`` (the default, as in peft's EVA), for
    ranks other than ``r`` an ``alpha_pattern`` so the LoRA scaling stays what ``lora_config`` configures:
    ``alpha_l / r_l = alpha / r`` (``alpha_l / sqrt(r_l) = alpha / sqrt(r)`` under rsLoRA). Without the
    adjustment every layer keeps ``lora_alpha``, so its scaling is ``alpha / r_l``. ``r`` is
    ``state.config.rank``; the default alpha equals it (scaling 1). ``init_lora_weights`` is set to True (the
    ``A`` rows are then overwritten); overriding another explicit value warns.

    Args:
        state: the fit.
        lora_config: alpha, dropout, bias, ``modules_to_save``...; default: ``domain_fields`` with
            ``lora_alpha = r``.
        domain_fields: the domain's ``LoraConfig`` fields (``eva_lora_fields``: heads, task type,
            ``fan_in_fan_out``); with a ``lora_config`` only ``fan_in_fan_out=True`` is taken from them
            (:func:`domain_lora_config`).
    """
    base = domain_lora_config(lora_config, domain_fields, state.config.rank)
    if lora_config is not None and lora_config.init_lora_weights not in (True, "eva"):
        warn(
            f"lora_config.init_lora_weights={lora_config.init_lora_weights!r} is replaced: EVA sets the LoRA A rows "
            "to the state's components and B to 0. Leave init_lora_weights at its default to silence this.",
            EvaWarning,
        )
    rank = state.config.rank
    adjust = state.config.adjust_scaling_factors
    alpha: float = base.lora_alpha
    if adjust:
        alpha *= rank / base.r if not base.use_rslora else math.sqrt(rank / base.r)
    kept = [name for name, r in state.ranks.items() if r > 0]
    if not kept:
        raise InvalidConfigError("every layer of the EvaState has rank 0; fit with a larger rank or other targets.")
    rank_pattern = {_exact(name): r for name, r in state.ranks.items() if r > 0 and r != rank}
    alpha_pattern = {
        _exact(name): alpha * _alpha_factor(r, rank, base.use_rslora)
        for name in kept
        if (r := state.ranks[name]) != rank
    }
    if not adjust:
        alpha_pattern = {}
    return dataclasses.replace(
        base,
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int but takes any number
        target_modules="(" + "|".join(_exact(name) for name in kept) + ")$",
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        init_lora_weights=True,
    )


@torch.no_grad()
def apply(
    model: nn.Module,
    state: EvaState,
    lora_config: LoraConfig | None = None,
    adapter_name: str = "default",
    *,
    plugins: PluginManager | None = None,
) -> PeftModel:
    """Wrap ``model`` in a peft LoRA model whose ``lora_A`` rows are the EVA components and ``lora_B = 0``.

    The base weights are untouched, so the output at step 0 equals the base model's. Layers of rank 0
    get no adapter. The result saves with ``save_pretrained`` and loads with plain
    ``peft.PeftModel.from_pretrained``, with nothing of eva installed; its ``eva_state`` attribute holds
    ``state``.

    Everything that can be checked is checked before the model is touched, and a failure while peft
    injects the adapters (or an interrupt) is rolled back: on any error ``model`` is exactly as it came in.

    Args:
        model: the model ``state`` was fitted on; or a ``PeftModel`` of it carrying LoRA adapters already,
            to which ``adapter_name`` is added (peft's ``add_adapter``: not made active; call
            ``set_adapter(adapter_name)`` to train it), the other adapters left as they are.
        state: from :func:`eva_core.fit` or :meth:`EvaState.load`.
        lora_config: dropout, bias, rsLoRA, ``modules_to_save``... are taken from it; ``r``,
            ``target_modules``, the patterns and ``init_lora_weights`` are set from ``state``. Default: the
            fitted domain's fields (its head in ``modules_to_save``, its task type), ``lora_alpha = r``.
        adapter_name: the peft adapter to create.
        plugins: the plugin manager to ask for the domain's fields (default: a fresh one).

    Raises:
        InvalidConfigError: ``state`` does not fit ``model`` (a layer it lacks, other widths, invalid
            ranks), ``lora_config`` is invalid or leaves out a layer of the state, or ``model`` already has
            an adapter named ``adapter_name``.
        MetaDeviceError: ``model`` has weights on the meta device.
    """
    config, rows = _prepare(model, state, lora_config, adapter_name, plugins or plugin_manager())
    with rolled_back(model):
        peft_model = _inject(model, config, adapter_name)
        _copy_components(peft_model, rows, adapter_name)
        peft_model.eva_state = state  # type: ignore[assignment]
    injected = peft_model.peft_config[adapter_name]  # the LoraConfig ``config`` became
    saved = getattr(injected, "modules_to_save", None)
    if saved:  # peft adds its task heads (SEQ_CLS: classifier, score) to the ones the domain already named
        injected.modules_to_save = list(dict.fromkeys(saved))  # type: ignore[attr-defined]
    return peft_model


def _prepare(
    model: nn.Module, state: EvaState, lora_config: LoraConfig | None, adapter_name: str, manager: PluginManager
) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """Every check ``apply`` can make without touching ``model``: the LoraConfig to inject and, per layer of
    rank > 0, the (r_l, d_in) rows its ``lora_A`` receives."""
    check_destination(model, adapter_name)
    modules = plain_modules(model)
    rows = state_rows(state, modules)
    check_wrapped(model, rows)
    base = base_model(model)
    fields = _domain(base, state, manager).lora_fields(base, list(rows))
    config = copy.deepcopy(lora_config_for(state, lora_config, fields))
    from peft.tuners.tuners_utils import check_target_module_exists

    saved = config.modules_to_save or []  # peft >= 0.16 leaves these out of its targets itself, 0.15 does not
    for name in rows:
        if not check_target_module_exists(config, name) or any(name == s or name.endswith(f".{s}") for s in saved):
            raise InvalidConfigError(
                f"lora_config leaves out layer {name!r} of the state (its exclude_modules or modules_to_save name "
                "it), so it could not receive its EVA components; remove it from there, or give it rank 0 "
                "(EvaState.ranks) to leave it without an adapter."
            )
    return config, rows


def _inject(model: nn.Module, config: LoraConfig, adapter_name: str) -> PeftModel:
    """A new ``PeftModel`` around ``model``, or ``model`` (a ``PeftModel``) with the adapter added.

    Raises:
        InvalidConfigError: peft refused ``config`` (its ``ValueError`` / ``TypeError``).
    """
    from peft import PeftModel, get_peft_model

    try:
        if isinstance(model, PeftModel):
            model.add_adapter(adapter_name, config)
            return model
        return get_peft_model(model, config, adapter_name=adapter_name)
    except (ValueError, TypeError) as error:
        if isinstance(error, EvaError):
            raise
        raise InvalidConfigError(
            f"peft could not build adapter {adapter_name!r} from lora_config: {error}. Fix that field of lora_config."
        ) from error


def _copy_components(peft_model: PeftModel, rows: Mapping[str, torch.Tensor], adapter_name: str) -> None:
    """Write each layer's rows into its ``lora_A`` and zero its ``lora_B``."""
    modules = dict(peft_model.get_base_model().named_modules())
    for name, layer_rows in rows.items():
        layer = modules[name]
        weight_a, weight_b = _lora_weights(layer, adapter_name)  # A: (r_l, d_in), (r_l, C_in, k_h, k_w) for a conv
        layer_rows = layer_rows.to(device=weight_a.device, dtype=weight_a.dtype)  # (r_l, d_in)
        if weight_a.dim() > 2 and layer_rows.dim() == 2 and layer_rows.shape[1] == weight_a[0].numel():
            # a conv's A is (r_l, C_in, *kernel); rows of unfolded patches are flattened in that order
            layer_rows = layer_rows.reshape(weight_a.shape)
        if tuple(layer_rows.shape) != tuple(weight_a.shape):
            raise InvalidConfigError(
                f"layer {name!r}: the state holds components of shape {tuple(layer_rows.shape)} but the LoRA A "
                f"matrix is {tuple(weight_a.shape)}; was the state fitted on a different model?"
            )
        weight_a.copy_(layer_rows)
        weight_b.zero_()


def _lora_weights(layer: Any, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (A, B) weights of ``layer``'s adapter. An embedding's are ``lora_embedding_A`` (r_l, V) and
    ``lora_embedding_B`` (d_out, r_l): peft computes ``embedding(ids, A^T) @ B^T``, i.e. ``onehot(ids) A^T
    B^T`` as a linear layer's ``x A^T B^T``, so A's rows are the components there too."""
    embedding_a = getattr(layer, "lora_embedding_A", None)
    if embedding_a is not None and adapter_name in embedding_a:
        return embedding_a[adapter_name], layer.lora_embedding_B[adapter_name]
    return layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight


def _domain(model: nn.Module, state: EvaState, manager: PluginManager) -> DomainHooks:
    """The hooks of the domain ``state`` was fitted with; the model's own domain if that one is gone."""
    fitted = state.extra.get("domain", state.config.domain)
    if fitted is not None and fitted not in manager.names:
        warn(
            f"the state was fitted with the eva domain {fitted!r}, which is not installed here; the adapter gets "
            f"the LoraConfig fields of the domain that claims {type(model).__name__} instead. Install that domain's "
            "package, or pass lora_config=... with its heads in modules_to_save.",
            EvaWarning,
        )
        fitted = None
    return manager.for_model(model, fitted)


def _alpha_factor(layer_rank: int, rank: int, rslora: bool) -> float:
    return math.sqrt(layer_rank / rank) if rslora else layer_rank / rank


def _exact(name: str) -> str:
    """A pattern matching exactly ``name``: peft matches pattern keys as suffixes, so anchor them."""
    return "^" + re.escape(name)
