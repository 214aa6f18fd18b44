"""peft's EVA (``peft.tuners.lora.eva.get_eva_state_dict``) on any domain's model, fed the rows eva-core
measures.

peft's own defaults handle language models only (a dict batch, ``model(**batch)``, the attention mask).
Here its three documented extension points take the domain plugin's answers instead, so peft measures
exactly the rows a fit of ours would:

- ``forward_fn(model, batch)``: ``model(*prepared.args, **prepared.kwargs)`` of the plugin's
  ``prepare_batch``;
- ``prepare_model_inputs_fn(batch, config)``: that batch's (B, T) row mask (``None``: every row);
- ``prepare_layer_inputs_fn(layer_input, row_mask, name)``: the plugin's rows function of the layer, its
  masked rows (N, d_in).

peft cycles its batches until every layer converges; ``forward_fn`` stops it after ``cap`` measured
batches (plus peft's first pass, which only hashes the inputs to find layers that share one). A run
stopped there gets peft's own rank allocation (global top explained-variance ratios, at most
``round(rho * r)`` per layer) from the statistics it reached.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from eva_core import plugin_manager

__all__ = ["layer_owners", "peft_allocation", "peft_fit", "tensor_bytes"]


class _CapReached(Exception):  # noqa: N818 - control flow
    """Raised from ``forward_fn`` to stop peft's endless cycling once the batch cap is reached."""


def peft_fit(
    model: nn.Module, batches: list[Any], targets: str, *, rank: int, rho: float, tau: float, cap: int
) -> dict:
    """Run peft's EVA on ``batches`` (at most ``cap`` measured batches).

    Returns:
        ``batches`` (measured batches, the hashing pass not counted), ``forwards`` (every forward pass),
        ``converged`` (layers whose allocated components all converged), ``capped``, ``statistic_bytes``
        (the bytes of the storages peft's ``IncrementalPCA`` objects hold at the end), and ``layers``:
        name -> ``{"components": (round(rho * rank), d_in) peft's top components of the layer's input,
        "rank": its allocated rank, "rows": rows measured, "source": the layer whose hook measured it}``.
    """
    from peft import LoraConfig
    from peft.tuners.lora import eva as peft_eva
    from peft.tuners.lora.config import EvaConfig as PeftEvaConfig

    plugins = plugin_manager().for_model(model)
    config = plugins.config(model, None, {"target_modules": targets})
    layers = plugins.layers(model, config)
    rows_fns = plugins.rows_functions(layers)
    calls = {"forwards": 0}

    def prepared(batch: Any) -> Any:
        ready = plugins.prepare_batch(batch, model, config)
        if ready is None:
            raise TypeError(f"no eva plugin prepares a {type(batch).__name__} batch for this model")
        return ready

    def forward_fn(model: nn.Module, batch: Any) -> Any:
        if calls["forwards"] >= cap + 1:  # the hashing pass on batch 0, then cap measured batches
            raise _CapReached
        calls["forwards"] += 1
        ready = prepared(batch)
        return model(*ready.args, **ready.kwargs)

    def model_inputs(batch: Any, peft_config: Any) -> torch.Tensor | None:
        return prepared(batch).row_mask

    def layer_inputs(layer_input: Any, row_mask: torch.Tensor | None, name: str) -> torch.Tensor:
        x = layer_input[0] if isinstance(layer_input, (tuple, list)) else layer_input
        rows, keep = rows_fns[name](x, row_mask)  # (N, d_in), (N,) or None
        return rows if keep is None else rows[keep]

    hooks: dict[str, Any] = {}
    original = peft_eva.SVDHook.__call__

    def recording(hook: Any, module: nn.Module, inputs: tuple, output: object) -> None:
        original(hook, module, inputs, output)
        hooks[hook.name] = hook

    lora = LoraConfig(
        r=rank, target_modules=targets, init_lora_weights="eva", eva_config=PeftEvaConfig(rho=rho, tau=tau)
    )
    peft_eva.SVDHook.__call__ = recording  # type: ignore[method-assign]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = peft_eva.get_eva_state_dict(
                model, batches, peft_config=lora, forward_fn=forward_fn, prepare_model_inputs_fn=model_inputs,
                prepare_layer_inputs_fn=layer_inputs, show_progress_bar=False,
            )  # fmt: skip
        ranks, capped = {name: len(value) for name, value in state.items()}, False
    except _CapReached:
        ranks, capped = peft_allocation(hooks, list(layers), rank, rho), True
    finally:
        peft_eva.SVDHook.__call__ = original  # type: ignore[method-assign]
        _remove_hooks(model, peft_eva._Hook)  # a stopped run leaves peft's hooks on the model
    owners = layer_owners(list(layers), hooks)
    out = {
        name: {
            "components": hooks[owner].svd.components_.detach().double().clone(),
            "rank": ranks[name],
            "rows": int(hooks[owner].svd.n_samples_seen_.sum()),
            "source": owner,
            "converged": bool(hooks[owner].converged[: ranks[name]].all()),
        }
        for name, owner in owners.items()
    }
    converged = sum(layer["converged"] for layer in out.values())
    held = sum(tensor_bytes(hook.svd) for hook in hooks.values())
    return {"batches": calls["forwards"] - 1, "forwards": calls["forwards"], "converged": converged,
            "capped": capped, "statistic_bytes": held, "layers": out}  # fmt: skip


def _remove_hooks(model: nn.Module, kind: type) -> None:
    """Remove every forward hook of type ``kind`` from ``model``'s modules."""
    for module in model.modules():
        for key in [key for key, hook in module._forward_hooks.items() if isinstance(hook, kind)]:
            del module._forward_hooks[key]


def layer_owners(names: list[str], hooks: dict[str, Any]) -> dict[str, str]:
    """layer -> the layer whose SVD hook measures its input: a layer without a hook of its own shares the
    input of the last hooked layer before it (peft hooks the first of the layers with equal inputs)."""
    owners, leader = {}, names[0]
    for name in names:
        leader = name if name in hooks else leader
        owners[name] = leader
    return owners


def peft_allocation(hooks: dict[str, Any], names: list[str], rank: int, rho: float) -> dict[str, int]:
    """peft's rank allocation for a run stopped before convergence: the ``rank * L`` largest explained-
    variance ratios among each layer's first ``round(rho * rank)`` (a follower competes with its owner's)."""
    owners, most = layer_owners(names, hooks), round(rho * rank)
    candidates = [
        (float(ratio), name) for name in names for ratio in hooks[owners[name]].svd.explained_variance_ratio_[:most]
    ]
    ranks = dict.fromkeys(names, 0)
    for _, name in sorted(candidates, key=lambda item: -item[0])[: rank * len(names)]:
        ranks[name] += 1
    return ranks


def tensor_bytes(owner: object) -> int:
    """The bytes of the storages behind the tensors among ``owner``'s attributes (and lists or tuples of
    them), each storage counted once: a view keeps its whole storage alive, so it counts in full."""
    storages: dict[int, int] = {}
    for value in vars(owner).values():
        for tensor in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
