"""EVA's components on a Decision Transformer against an explicit SVD of the rows a hook records."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from eva_core import EvaConfig, fit
from eva_core.errors import NotConvergedWarning
from eva_rl.batches import MODEL_INPUTS, token_mask


def test_components_are_the_top_right_singular_vectors(tiny_dt: torch.nn.Module, dt_batches: list[Any]) -> None:
    batches = [{**b, "attention_mask": b["attention_mask"].clone()} for b in dt_batches]
    batches[0]["attention_mask"][:, :2] = 0  # more padding, which must not count
    names = ["encoder.h.0.attn.c_attn", "encoder.h.1.mlp.c_proj"]
    modules = dict(tiny_dt.named_modules())
    recorded: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    masks = [token_mask(b["attention_mask"]).reshape(-1) for b in batches]  # (N,) each

    def recorder(name: str) -> Any:
        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            recorded[name].append(args[0].detach().reshape(-1, args[0].shape[-1]))  # (N, d_in)

        return hook

    handles = [modules[name].register_forward_pre_hook(recorder(name)) for name in names]
    with torch.no_grad():
        for batch in batches:
            tiny_dt(**{k: batch[k] for k in MODEL_INPUTS if k in batch})
    for handle in handles:
        handle.remove()

    config = EvaConfig(rank=3, rho=1.0, tau=1.0, max_steps=len(batches), target_modules=names, progress=False)
    with pytest.warns(NotConvergedWarning):  # tau=1 never converges: every batch is used
        state = fit(tiny_dt, batches, config)
    assert state.steps == len(batches)
    for name in names:
        rows = torch.cat([r[m] for r, m in zip(recorded[name], masks, strict=True)]).double()  # (N, d_in)
        assert state.layers[name].rows == rows.shape[0] == sum(int(m.sum()) for m in masks)
        centered = rows - rows.mean(dim=0)
        _, _, vh = torch.linalg.svd(centered, full_matrices=False)
        ours = state.layers[name].components[:3].double()  # (3, d_in)
        cosines = (ours * vh[:3]).sum(dim=1).abs()
        torch.testing.assert_close(cosines, torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)
