"""LoRA initializations the comparison needs where peft's own does not apply, written from their
definitions.

OLoRA (Büyükakyüz, 2024) factors the pretrained weight ``W`` (d_out, d_in) as ``Q R`` and starts the
adapter from its first ``r`` factors, keeping the rest in the base layer:

    B = Q[:, :r]  (d_out, r),   A = R[:r]  (r, d_in),   W_res = W - s * B @ A

so the model's output is unchanged at step 0. peft's ``init_lora_weights="olora"`` factors the stored
weight as it is; for GPT-2's ``Conv1D`` (``fan_in_fan_out=True``) that is ``W^T`` (d_in, d_out), and the
adapter it builds has the shapes of the transpose: its first forward pass fails. :func:`olora_fan_in_fan_out`
factors ``W`` itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["olora_fan_in_fan_out"]


@torch.no_grad()
def olora_fan_in_fan_out(model: PeftModel, adapter_name: str = "default") -> int:
    """OLoRA-initialize every LoRA layer of ``model`` whose base weight is stored as (d_in, d_out).

    Args:
        model: a peft model built with ``fan_in_fan_out=True`` and any ``init_lora_weights`` (its
            ``A``/``B`` and the targeted base weights are overwritten).

    Returns:
        how many layers were initialized.
    """
    count = 0
    for layer in _transposed_lora_layers(model, adapter_name):
        base = layer.get_base_layer()
        stored = base.weight  # (d_in, d_out), Conv1D's layout
        weight = stored.detach().to(torch.float32).T  # (d_out, d_in)
        rank, scale = layer.r[adapter_name], layer.scaling[adapter_name]
        q, upper = torch.linalg.qr(weight)  # (d_out, k), (k, d_in), k = min(d_out, d_in)
        b, a = q[:, :rank], upper[:rank]  # (d_out, r), (r, d_in)
        layer.lora_A[adapter_name].weight.copy_(a)
        layer.lora_B[adapter_name].weight.copy_(b)
        stored.copy_((weight - scale * b @ a).T.to(stored.dtype))
        count += 1
    return count


def _transposed_lora_layers(model: PeftModel, adapter_name: str) -> list[Any]:
    """peft LoRA layers holding ``adapter_name`` over a base weight stored (d_in, d_out) (typed ``Any``:
    peft's module dicts are untyped)."""
    from peft.tuners.lora import LoraLayer

    return [
        layer
        for layer in model.modules()
        if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A and getattr(layer, "fan_in_fan_out", False)
    ]
