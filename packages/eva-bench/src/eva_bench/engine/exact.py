"""The exact reference of ``bench_core.py``: how far each method's components are from the exact ones."""

from __future__ import annotations

import contextlib

import torch

from . import data
from .data import RANK, RHO


class _Done(Exception):  # noqa: N818 - control flow
    """Raised after the last targeted layer: the rest of the forward pass feeds no target."""


def run_exact(model: torch.nn.Module, batches: list, targets: str, runs: dict[str, dict]) -> dict:
    """Per method, mean and max ``1 - |cos|`` of each layer's allocated components against the exact
    top components of the rows of the batches that layer measured (averaged over layers with rank > 0).

    Exact: float64 scatter of the attention-masked rows, centered, and ``torch.linalg.eigh`` (its
    eigenvectors are the right-singular vectors of the centered rows). A layer whose input is the very
    tensor an earlier layer got (q/k/v) reuses that layer's statistics when both need the same batches.
    """
    names = data.target_names(model, targets)
    sets = {name: {tuple(run["layers"][name]["batches"]) for run in runs.values()} for name in names}
    alias: dict[str, str] = {}
    acc: dict[tuple[str, tuple[int, ...]], list] = {}  # (layer, batches) -> [scatter, sum, count]
    exact: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
    step: dict = {"b": 0, "mask": None, "seen": {}, "order": []}

    def key(name: str, batches_used: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
        owner = alias[name]
        return (owner, batches_used) if batches_used in sets[owner] else (name, batches_used)

    def hook(name: str):
        def capture(module: torch.nn.Module, args: tuple) -> None:
            x, b = args[0], step["b"]
            held = step["seen"].get(id(x))
            owner = held[0] if held is not None and held[1] is x else name
            if alias.setdefault(name, owner) != owner:
                raise RuntimeError(f"{name} shares its input with {owner} on batch {b} only")
            if held is None:
                rows = x[step["mask"]].double()  # (N, d_in)
                step["seen"][id(x)] = (name, x, rows.T @ rows, rows.sum(0), len(rows))
            stats = step["seen"][id(x)][2:]
            for used in sets[name]:
                k = key(name, used)
                if k[0] == name and b in used:
                    old = acc.get(k, [0.0, 0.0, 0])
                    acc[k] = [old[0] + stats[0], old[1] + stats[1], old[2] + stats[2]]
            if b == 0:
                step["order"].append(name)
            elif name == step["order"][-1]:
                raise _Done  # the rest of the network feeds no target

        return capture

    handles = [model.get_submodule(name).register_forward_pre_hook(hook(name)) for name in names]
    last = max(max(used) for used_sets in sets.values() for used in used_sets)
    with torch.no_grad():
        for b, batch in enumerate(batches[: last + 1]):
            step.update(b=b, mask=batch["attention_mask"].bool(), seen={})
            with contextlib.suppress(_Done):
                model(**batch)
            for k in [k for k in acc if k[1][-1] == b]:
                scatter, total, n = acc.pop(k)
                _, vectors = torch.linalg.eigh(scatter - torch.outer(total, total) / n)
                exact[k] = vectors.flip(1)[:, : round(RHO * RANK)].T.contiguous()
    for handle in handles:
        handle.remove()
    out = {}
    for method, run in runs.items():
        means, maxes = [], []
        for name in names:
            mine = run["layers"][name]["components"].double()
            if len(mine):
                ref = exact[key(name, tuple(run["layers"][name]["batches"]))][: len(mine)]
                gap = 1 - torch.nn.functional.cosine_similarity(mine, ref, dim=1).abs()
                means.append(gap.mean().item())
                maxes.append(gap.max().item())
        out[method] = {"mean": sum(means) / len(means), "max": sum(maxes) / len(maxes), "worst": max(maxes)}
    return out
