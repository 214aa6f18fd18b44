"""The token layout of a Decision Transformer: each timestep becomes three tokens (R_t, s_t, a_t).

``DecisionTransformerModel.forward`` stacks the embeddings as
``torch.stack((returns, states, actions), dim=1).permute(0, 2, 1, 3).reshape(B, 3T, H)``, so token
``3t + 0`` is the return-to-go of timestep t, ``3t + 1`` its state and ``3t + 2`` its action, and the
(B, T) attention mask is stacked the same way. :func:`token_mask` reproduces that order.
"""

from __future__ import annotations

import torch

from .errors import TrajectoryError

__all__ = ["MODALITIES", "TOKENS_PER_STEP", "token_mask"]

MODALITIES: tuple[str, ...] = ("return", "state", "action")
"""The three tokens of one timestep, in sequence order."""

TOKENS_PER_STEP = len(MODALITIES)


def token_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The GPT-2 token mask of a (B, T) timestep mask, in the model's interleaved order.

    Args:
        attention_mask: (B, T), nonzero where the timestep is real (not padding).

    Returns:
        (B, 3T) bool: entry ``3t + k`` is the mask of timestep t for k in (return, state, action).

    Raises:
        TrajectoryError: ``attention_mask`` is not 2-d.
    """
    if attention_mask.dim() != 2:
        raise TrajectoryError(
            f"attention_mask must be (B, T) (one entry per timestep), got shape {tuple(attention_mask.shape)}; "
            "pass the per-timestep mask the Decision Transformer takes."
        )
    return (attention_mask != 0).repeat_interleave(TOKENS_PER_STEP, dim=1)  # (B, 3T)
