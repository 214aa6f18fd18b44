"""PiSSA, MiLoRA and OLoRA written from their definitions, for the layers peft cannot initialize.

Each factors the pretrained weight seen as a matrix ``W`` (d_out, d_in), starts the adapter from some of
its factors and keeps the rest in the base layer, so the output is unchanged at step 0
(``W_res + s * B @ A == W``, ``s`` the LoRA scaling):

- PiSSA (Meng et al., 2024): ``W = U S V^T``; ``B = U_r sqrt(S_r / s)`` (d_out, r),
  ``A = sqrt(S_r / s) V_r^T`` (r, d_in). ``pissa_niter_K`` takes the top triplets from
  ``torch.svd_lowrank`` with K subspace iterations.
- MiLoRA (Wang et al., 2024): as PiSSA but from the r *smallest* singular triplets, so the adapter starts
  in the directions the pretrained weight uses least and ``W_res`` keeps the principal ones. peft has no
  MiLoRA: every layer, ``nn.Linear`` included, is initialized here.
- OLoRA (Büyükakyüz, 2024): ``W = Q R``; ``B = Q[:, :r]``, ``A = R[:r]``.

peft applies them to ``nn.Linear`` only: for a ``Conv2d`` it raises, and for GPT-2's ``Conv1D``
(weights stored (d_in, d_out), ``fan_in_fan_out=True``) its OLoRA factors the stored transpose and
builds adapters of the wrong shapes. Here ``W`` is the layer's map as a matrix: a ``Conv1D``'s weight
transposed, a ``Conv2d``'s weight flattened to (C_out, C_in * k_h * k_w) — the order of its unfolded
patches — so ``A`` reshapes to peft's conv ``lora_A`` (r, C_in, k_h, k_w) and ``B`` to its 1 x 1
``lora_B`` (C_out, r, 1, 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["factor_weights", "needs_own_factoring"]


def needs_own_factoring(method: str, modules: list[nn.Module], fan_in_fan_out: bool) -> bool:
    """Whether ``method`` (``pissa``, ``pissa_niter_K``, ``milora``, ``olora``) on these target ``modules``
    must use :func:`factor_weights` instead of peft's: always for MiLoRA (peft has none), else when a conv
    is among them, or for OLoRA on transposed weights."""
    if method == "milora":
        return True
    if not (method == "olora" or method.startswith("pissa")):
        return False
    if any(isinstance(module, nn.modules.conv._ConvNd) for module in modules):
        return True
    return method == "olora" and fan_in_fan_out


@torch.no_grad()
def factor_weights(model: PeftModel, method: str, adapter_name: str = "default") -> int:
    """Initialize every LoRA layer of ``model`` by PiSSA, MiLoRA or OLoRA; its base weight becomes the residual.

    Args:
        model: a peft model built with ``init_lora_weights=True`` (its ``A``/``B`` are overwritten).
        method: ``pissa``, ``pissa_niter_K``, ``milora`` or ``olora``.

    Returns:
        how many layers were initialized.
    """
    count = 0
    for layer in _lora_layers(model, adapter_name):
        base = layer.get_base_layer()
        weight_a, weight_b = layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight
        rank, scale = layer.r[adapter_name], layer.scaling[adapter_name]
        transposed = bool(getattr(layer, "fan_in_fan_out", False))  # only peft's Linear wrapper has the flag
        matrix = _as_matrix(base.weight, transposed)  # (d_out, d_in)
        b, a = _factors(matrix, rank, scale, method)  # (d_out, r), (r, d_in)
        weight_a.copy_(a.reshape(weight_a.shape))  # (r, d_in) or (r, C_in, k_h, k_w)
        weight_b.copy_(b.reshape(weight_b.shape))  # (d_out, r) or (C_out, r, 1, 1)
        residual = matrix - scale * b @ a  # (d_out, d_in)
        stored = residual.T if transposed else residual.reshape(base.weight.shape)
        base.weight.copy_(stored.to(base.weight.dtype))
        count += 1
    return count


def _factors(matrix: torch.Tensor, rank: int, scale: float, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, A)`` of ``method`` for ``matrix`` (d_out, d_in): (d_out, r) and (r, d_in)."""
    if method == "olora":
        q, upper = torch.linalg.qr(matrix)  # (d_out, k), (k, d_in)
        return q[:, :rank], upper[:rank]
    if method in ("pissa", "milora"):
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)  # (d_out, k), (k,), (k, d_in)
        if method == "milora":  # the r minor triplets, largest of them first
            u, s, vh = u[:, -rank:], s[-rank:], vh[-rank:]  # (d_out, r), (r,), (r, d_in)
    else:  # pissa_niter_K
        niter = int(method.removeprefix("pissa_niter_"))
        u, s, v = torch.svd_lowrank(matrix, q=rank, niter=niter)  # (d_out, r), (r,), (d_in, r)
        vh = v.T
    root = torch.sqrt(s[:rank] / scale)  # (r,)
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def _as_matrix(weight: torch.Tensor, fan_in_fan_out: bool) -> torch.Tensor:
    """The layer's map as (d_out, d_in) float32: Conv1D's (d_in, d_out) transposed, a conv flattened."""
    matrix = weight.detach().to(torch.float32)
    return matrix.T if fan_in_fan_out else matrix.reshape(matrix.shape[0], -1)


def _lora_layers(model: PeftModel, adapter_name: str) -> list[Any]:
    """peft LoRA layers holding ``adapter_name`` (typed ``Any``: peft's module dicts are untyped)."""
    from peft.tuners.lora import LoraLayer

    return [layer for layer in model.modules() if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A]
