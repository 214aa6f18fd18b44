"""Building a small transformers ``DecisionTransformerModel``."""

from __future__ import annotations

from transformers import DecisionTransformerConfig, DecisionTransformerModel

__all__ = ["decision_transformer"]


def decision_transformer(
    state_dim: int,
    act_dim: int,
    *,
    hidden_size: int = 128,
    layers: int = 3,
    heads: int = 1,
    max_ep_len: int = 1000,
    dropout: float = 0.1,
) -> DecisionTransformerModel:
    """A randomly initialized Decision Transformer (GPT-2 blocks with ``4 * hidden_size`` MLPs, ReLU,
    ``tanh`` on the actions); ``max_ep_len`` bounds the timestep embedding."""
    config = DecisionTransformerConfig(
        state_dim=state_dim,
        act_dim=act_dim,
        hidden_size=hidden_size,
        n_layer=layers,
        n_head=heads,
        n_inner=4 * hidden_size,
        activation_function="relu",
        max_ep_len=max_ep_len,
        n_positions=1024,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        action_tanh=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    return DecisionTransformerModel(config)
