"""LoRA initializations by name: EVA and the peft initializations it is compared with.

Every method gets the same layers, the same average rank ``r`` and the same ``LoraConfig`` (alpha,
dropout, ``modules_to_save``), so a comparison differs only in how ``A`` and ``B`` start:

- ``lora``: peft's default, ``A`` Kaiming-uniform, ``B = 0``.
- ``eva``: :func:`eva_core.init` (``A`` = top input components, ``B = 0``, ranks redistributed).
  ``eva_whiten`` scales each ``A`` row by ``1 / std`` of its projection (``EvaConfig.whiten``), so
  ``A x`` has unit variance per component instead of the (often much larger) spread of the top
  directions of the input.
- ``pissa``: peft's PiSSA (``A``, ``B`` from the top singular triplets of ``W``; ``W`` replaced by the
  residual). ``pissa_niter_K`` uses the fast randomized SVD with ``K`` subspace iterations.
- ``olora``: peft's OLoRA (``A``, ``B`` from the QR decomposition of ``W``; ``W`` replaced by the residual).
- For convs (and OLoRA on GPT-2's transposed ``Conv1D``), where peft's PiSSA/OLoRA do not apply,
  :mod:`eva_core.baselines` factors ``W`` as a matrix by the same definitions.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from .api import init
from .baselines import factor_weights, needs_own_factoring
from .errors import InvalidConfigError

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel

__all__ = ["EVA_VARIANTS", "INIT_METHODS", "initialize", "peft_init_weights"]

INIT_METHODS: tuple[str, ...] = ("lora", "eva", "pissa", "olora")
"""The methods a comparison runs by default; :func:`initialize` also takes :data:`EVA_VARIANTS` and
``pissa_niter_K`` for any K >= 1."""

EVA_VARIANTS: Mapping[str, Mapping[str, Any]] = {"eva": {}, "eva_whiten": {"whiten": True}}
"""EVA method names and the :class:`EvaConfig` fields each sets (the caller's ``eva_overrides`` win)."""


def peft_init_weights(method: str) -> bool | str:
    """The ``LoraConfig.init_lora_weights`` value of a peft method name.

    Raises:
        InvalidConfigError: ``method`` is not a peft initialization we know.
    """
    if method == "lora":
        return True
    if method in ("pissa", "olora"):
        return method
    if method.startswith("pissa_niter_") and method.removeprefix("pissa_niter_").isdigit():
        return method
    raise InvalidConfigError(
        f"method={method!r} is not a known LoRA initialization; pick one of "
        f"{', '.join(sorted({*INIT_METHODS, *EVA_VARIANTS}))} (or pissa_niter_K with an integer K)."
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
) -> PeftModel:
    """Wrap ``model`` in LoRA adapters initialized by ``method``.

    Args:
        model: the base model (modified in place by peft; ``pissa``/``olora`` also rewrite the targeted
            weights into their residuals, as those methods define).
        method: one of :data:`INIT_METHODS` or :data:`EVA_VARIANTS`, or ``pissa_niter_K``.
        batches: the data EVA measures (required for ``eva``, ignored otherwise).
        rank: r, the rank of every adapted layer (EVA: the average rank; its budget is ``r * L``).
        target_modules: module names or a regex, as ``peft.LoraConfig`` takes them.
        lora_config: alpha, dropout, bias, ``modules_to_save``... for every method; ``r``,
            ``target_modules`` and ``init_lora_weights`` are set here. Default: ``lora_alpha = rank``.
        eva_overrides: extra :class:`EvaConfig` fields for ``eva`` (``rho``, ``tau``, ``max_steps``...).

    Raises:
        InvalidConfigError: unknown ``method``, or ``eva`` without ``batches``.
    """
    from peft import LoraConfig, get_peft_model

    base = lora_config or LoraConfig(r=rank, lora_alpha=rank)
    if method in EVA_VARIANTS:
        if batches is None:
            raise InvalidConfigError(
                f"method={method!r} measures data: pass batches (a DataLoader or a list of batches)."
            )
        overrides = {"rank": rank, "target_modules": target_modules, **EVA_VARIANTS[method], **(eva_overrides or {})}
        return init(model, batches, lora_config=base, **overrides)
    weights = peft_init_weights(method)
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    own = needs_own_factoring(method, _modules(model, targets), bool(base.fan_in_fan_out))
    if own:
        weights = True  # peft cannot factor these layers: start plain, then factor W (baselines.py)
    # peft types the value as a Literal whose "pissa_niter_[number of iters]" no real string matches
    config = dataclasses.replace(base, r=rank, target_modules=targets, init_lora_weights=weights)  # type: ignore[arg-type]
    peft_model = get_peft_model(model, config)
    if own:
        factor_weights(peft_model, method)
    return peft_model


def _modules(model: nn.Module, targets: list[str] | str) -> list[nn.Module]:
    """The modules ``targets`` names (as peft matches them: a regex over the whole name, or names that
    equal or end a module's name at a dot)."""
    named = dict(model.named_modules())
    if isinstance(targets, str):
        return [module for name, module in named.items() if re.fullmatch(targets, name)]
    wanted = set(targets)
    return [module for name, module in named.items() if name in wanted or any(name.endswith("." + t) for t in wanted)]
