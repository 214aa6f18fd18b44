"""LoRA initializations by name: EVA, its variants and every initialization the EVA paper compares with.

Every method gets the same layers, the same average rank ``r`` and the same ``LoraConfig`` (alpha,
dropout, ``modules_to_save``), so a comparison differs only in how the adapters start (and, for DoRA and
AdaLoRA, in the adapter peft builds):

- ``lora``: peft's default, ``A`` Kaiming-uniform, ``B = 0``. ``dora``: the same with ``use_dora``
  (weight-decomposed: a trained magnitude per output, LoRA on the direction).
- ``adalora``: peft's AdaLoRA, pruned during training to an average rank ``r``
  (:mod:`eva_bench.peft_initializations`; needs ``steps``).
- ``pissa``: peft's PiSSA (``A``, ``B`` from the top singular triplets of ``W``; ``W`` replaced by the
  residual). ``pissa_niter_K`` uses the fast randomized SVD with ``K`` subspace iterations.
- ``milora``: MiLoRA, as PiSSA from the *minor* singular triplets (:mod:`eva_bench.factorings`; peft has none).
- ``olora``: peft's OLoRA (``A``, ``B`` from the QR decomposition of ``W``; ``W`` replaced by the residual).
- ``corda`` and ``loraga``: peft's CorDA (input covariance of the data) and LoRA-GA (gradients of the
  loss), read from the first ``calibration_batches`` (:mod:`eva_bench.peft_initializations`; need ``loss_fn``).
- ``eva``: the paper's EVA through :func:`eva_core.init` (``A`` = top input components, ``B = 0``, ranks
  redistributed with the caller's ``rho``; not whitened). Variants: ``eva_whiten`` scales each ``A`` row
  by ``1 / std`` of its projection (``EvaConfig.whiten``); ``eva_rho1`` keeps every layer at rank ``r``
  (no redistribution); ``eva_dora`` is EVA's ``A`` in DoRA adapters. A variant's settings win over
  ``eva_overrides``, so a name means the same method in every domain.
- For convs (and OLoRA on GPT-2's transposed ``Conv1D``), where peft's PiSSA/OLoRA do not apply,
  :mod:`eva_bench.factorings` factors ``W`` as a matrix by the same definitions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from torch import nn
from torch.nn.modules.conv import _ConvNd

from eva_core import init
from eva_core.errors import InvalidConfigError
from eva_core.targets import select_modules

from .factorings import factor_weights, needs_own_factoring
from .peft_initializations import DATA_METHODS, adalora_model, calibrated_model
from .training import LossFn

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["ALL_METHODS", "EVA_VARIANTS", "INIT_METHODS", "initialize", "peft_init_weights"]

INIT_METHODS: tuple[str, ...] = ("lora", "eva", "pissa", "olora")
"""The methods a quick comparison runs by default."""

EVA_VARIANTS: Mapping[str, Mapping[str, Any]] = {
    "eva": {"whiten": False},
    "eva_whiten": {"whiten": True},
    "eva_rho1": {"rho": 1.0, "whiten": False},
    "eva_dora": {"whiten": False},
}
"""EVA method names and the :class:`EvaConfig` fields each fixes (``eva_dora`` also sets ``use_dora``)."""

ALL_METHODS: tuple[str, ...] = (
    "lora", "dora", "adalora", "pissa", "milora", "olora", "loraga", "corda", *EVA_VARIANTS,
)  # fmt: skip
"""Every name :func:`initialize` takes (and ``pissa_niter_K`` for any K >= 1): the EVA paper's baselines
and EVA's variants."""

_WEIGHT_FACTORINGS = ("pissa", "milora", "olora")


def peft_init_weights(method: str) -> bool | str:
    """The ``LoraConfig.init_lora_weights`` value of a method that needs nothing but a ``LoraConfig``.

    Raises:
        InvalidConfigError: ``method`` is not a LoRA initialization we know.
    """
    if method in ("lora", "dora"):
        return True
    if method in _WEIGHT_FACTORINGS:
        return method
    if method.startswith("pissa_niter_") and method.removeprefix("pissa_niter_").isdigit():
        return method
    raise InvalidConfigError(
        f"method={method!r} is not a known LoRA initialization; pick one of "
        f"{', '.join(ALL_METHODS)} (or pissa_niter_K with an integer K)."
    )


def initialize(
    model: nn.Module,
    method: str,
    batches: Iterable[Any] | None = None,
    *,
    rank: int,
    target_modules: Sequence[str] | str,
    lora_config: LoraConfig | None = None,
    eva_overrides: Mapping[str, Any] | None = None,
    loss_fn: LossFn | None = None,
    steps: int | None = None,
    calibration_batches: int = 8,
) -> PeftModel:
    """Wrap ``model`` in LoRA adapters initialized by ``method``.

    Args:
        model: the base model (modified in place by peft; ``pissa``, ``milora``, ``olora``, ``corda`` and
            ``loraga`` also rewrite the targeted weights into their residuals, as those methods define).
        method: one of :data:`ALL_METHODS`, or ``pissa_niter_K``.
        batches: training data, for the data-driven methods (EVA, CorDA, LoRA-GA); ignored otherwise.
        rank: r, the rank of every adapted layer (EVA: the average rank, its budget ``r * L``; AdaLoRA:
            the average rank it prunes to).
        target_modules: module names or a regex, as ``peft.LoraConfig`` takes them.
        lora_config: alpha, dropout, bias, ``modules_to_save``... for every method; ``r``,
            ``target_modules`` and ``init_lora_weights`` are set here. Default: ``lora_alpha = rank``.
        eva_overrides: extra :class:`EvaConfig` fields for EVA (``rho``, ``tau``, ``max_steps``...).
        loss_fn: ``(model, batch) -> scalar loss``, the training loss (CorDA runs it, LoRA-GA
            back-propagates it).
        steps: the training steps to come (AdaLoRA schedules its pruning over them).
        calibration_batches: batches CorDA and LoRA-GA read (EVA decides itself when it has seen enough).

    Raises:
        InvalidConfigError: unknown ``method``, or a method without what it needs (``batches``,
            ``loss_fn``, ``steps``), or targets it cannot adapt.
    """
    from peft import LoraConfig, get_peft_model

    base = lora_config or LoraConfig(r=rank, lora_alpha=rank)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    if method in EVA_VARIANTS:
        _require(method, batches=batches)
        overrides = {**(eva_overrides or {}), "rank": rank, "target_modules": target_modules, **EVA_VARIANTS[method]}
        if method == "eva_dora":
            base = dataclasses.replace(base, use_dora=True)
        return init(model, batches, lora_config=base, **overrides)  # type: ignore[arg-type]
    config = dataclasses.replace(base, r=rank, target_modules=targets)
    targeted = select_modules(model, targets)
    if method == "adalora" or method in DATA_METHODS:
        _refuse_convolutions(method, targeted)
    if method == "adalora":
        return adalora_model(model, config, steps=steps)
    if method in DATA_METHODS:
        _require(method, batches=batches, loss_fn=loss_fn)
        data, loss = cast("Iterable[Any]", batches), cast("LossFn", loss_fn)  # checked by _require above
        return calibrated_model(model, method, config, data, loss, calibration_batches=calibration_batches)
    weights = peft_init_weights(method)
    own = needs_own_factoring(method, list(targeted.values()), bool(base.fan_in_fan_out))
    if own:
        weights = True  # peft cannot factor these layers: start plain, then factor W (factorings.py)
    # peft types the value as a Literal whose "pissa_niter_[number of iters]" no real string matches
    config = dataclasses.replace(config, init_lora_weights=weights, use_dora=method == "dora" or base.use_dora)  # type: ignore[arg-type]
    peft_model = get_peft_model(model, config)
    if own:
        factor_weights(peft_model, method)
    return peft_model


def _require(method: str, **needed: object) -> None:
    """Raise when an argument ``method`` needs is ``None``."""
    missing = [name for name, value in needed.items() if value is None]
    if missing:
        what = {"batches": "batches (a DataLoader or a list of batches)", "loss_fn": "loss_fn=(model, batch) -> loss"}
        raise InvalidConfigError(
            f"method={method!r} reads training data: pass {' and '.join(what[name] for name in missing)}."
        )


def _refuse_convolutions(method: str, targeted: Mapping[str, nn.Module]) -> None:
    """Raise for targeted convolutions: peft implements ``method`` for nn.Linear and GPT-2 Conv1D only."""
    convs = [f"{name} ({type(module).__name__})" for name, module in targeted.items() if isinstance(module, _ConvNd)]
    if convs:
        raise InvalidConfigError(
            f"method={method!r}: peft implements it for nn.Linear and GPT-2 Conv1D layers only, and "
            f"target_modules includes {len(convs)} convolution(s), e.g. {', '.join(convs[:3])}; "
            "target the linear layers only, or pick lora, dora, pissa, milora, olora or eva."
        )
