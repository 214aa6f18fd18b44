"""Receptive-field patches: the SVD rows of an ``nn.Conv2d``.

A 2-d convolution is a linear map applied to every receptive field of its (padded) input. Unfolding
the input with the conv's kernel size, dilation, padding and stride gives one row per output position,
flattened in ``(C_in, k_h, k_w)`` order, so that::

    conv(x)[b, :, i, j] == W.reshape(C_out, -1) @ rows[b * L + i * W_out + j] + bias

EVA's components of these rows reshape to a LoRA ``A`` of shape ``(r, C_in, k_h, k_w)``, the layout of
peft's ``Conv2d`` adapter (eva-core's ``apply`` does the reshape).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from eva_core import RowsFn
from eva_core.errors import UnsupportedLayerError

__all__ = ["adapter_support", "conv_rows", "conv_rows_fn"]


def _explicit_padding(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding of ``conv``, ``padding="same"``/``"valid"`` resolved."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        pads: list[int] = []
        for dilation, kernel in zip(reversed(conv.dilation), reversed(conv.kernel_size), strict=True):  # width first
            total = dilation * (kernel - 1)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    pad_h, pad_w = conv.padding
    return (pad_w, pad_w, pad_h, pad_h)


def conv_rows(layer_input: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The receptive-field patches ``conv`` sees, padded as ``conv.padding_mode`` pads.

    Args:
        layer_input: (B, C_in, H, W), or (C_in, H, W) for an unbatched call.
        conv: an ``nn.Conv2d`` with ``groups == 1``.

    Returns:
        rows (N, C_in * k_h * k_w) with N = B * L, L = H_out * W_out, in output-position order.

    Raises:
        UnsupportedLayerError: ``conv.groups > 1``.
    """
    if conv.groups != 1:
        raise UnsupportedLayerError(
            f"conv_rows(conv=...) got a Conv2d with groups={conv.groups}; only groups == 1 convs have one "
            "row per receptive field over all input channels. Leave depthwise/grouped convs out of target_modules."
        )
    x = layer_input if layer_input.dim() == 4 else layer_input.unsqueeze(0)  # (B, C_in, H, W)
    batch, channels = x.shape[:2]
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and _explicit_padding(conv) == (0, 0, 0, 0):
        return x.permute(0, 2, 3, 1).reshape(-1, channels)  # (N, C_in): a pointwise conv sees pixels
    pad = _explicit_padding(conv)
    if any(pad):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, pad, mode=mode)  # (B, C_in, H + top + bottom, W + left + right)
    patches = F.unfold(x, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)  # (B, C_in*kh*kw, L)
    return patches.transpose(1, 2).reshape(batch * patches.shape[2], patches.shape[1])  # (N, C_in*kh*kw)


def adapter_support(conv: nn.Conv2d) -> str | None:
    """Why peft's LoRA ``Conv2d`` cannot reproduce what ``conv`` sees, or None when it can.

    peft builds ``lora_A`` with the base conv's kernel size, stride and padding but neither its dilation
    nor its padding mode, and its support for ``groups > 1`` is limited; EVA's components would then
    describe inputs the adapter never sees.
    """
    if conv.groups != 1:
        return f"groups={conv.groups} (depthwise/grouped convs: peft's LoRA for groups > 1 is limited)"
    if conv.dilation != (1, 1):
        return f"dilation={conv.dilation} (peft's LoRA A is built without dilation)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (peft's LoRA A always pads with zeros)"
    return None


def conv_rows_fn(conv: nn.Conv2d) -> RowsFn:
    """The rows function of ``conv`` for eva-core: ``(layer_input, row_mask) -> (rows, None)``.

    Images carry no padding, so every receptive field counts and the batch's row mask (which has no
    meaning per output position) is ignored.
    """

    def rows(layer_input: torch.Tensor, row_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return conv_rows(layer_input, conv), None

    return rows
