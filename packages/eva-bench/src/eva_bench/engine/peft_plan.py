"""What peft's EVA holds and computes on a model, predicted from shapes alone, as ``eva_core.plan`` predicts
ours: the competitor's column of the planner table (:mod:`eva_bench.engine.plan_table`).

Counted from reading ``peft/tuners/lora/eva.py`` and ``peft/utils/incremental_pca.py`` (peft 0.21.2):

- **Inputs.** peft hooks every targeted layer, hashes each one's input on a first forward pass, and keeps
  one ``SVDHook`` per distinct input. On a meta model nothing can be hashed, so the distinct inputs are
  those of a Llama block: q/k/v share one, gate/up share one, o and down have their own (4 per block).
- **Held between batches** (per distinct input of width d, k = ``round(rho * r)`` components, q =
  ``min(2k, d)`` the ``svd_lowrank`` width): from the second batch on, ``IncrementalPCA`` works in float64
  (its stacked matrix takes the dtype of the float64 mean correction), and its ``components_`` (k, d),
  ``singular_values_``, ``explained_variance_`` and ``explained_variance_ratio_`` are views of the first k
  of q rows, which keep the whole (q, d) right factor and (q,) vectors alive; with ``mean_`` and ``var_``
  (d,): ``8 q d + 16 d + 24 q + 12`` bytes (equal to the storages measured on the tiny block of the tests).
- **Transient of one update** (N rows): the hook's masked rows (N, d) in the model's dtype, a float32 copy
  when that is not float32, ``partial_fit``'s own clone (``copy=True``, float32) and the stacked
  ``[S V; X - mean; correction]`` (N + k + 1, d) in float64 it feeds to ``torch.svd_lowrank`` (q = 2k, 4
  power iterations; its own buffers are O((N + d) q)): ``e N d + 4 N d [e != 4] + 4 N d + 8 (N + k + 1) d
  + 24 q (N + k + 1 + d)`` bytes, e the model's bytes per element. Only one hook runs at a time.
- **The hashing pass** (first batch only): each targeted layer's rows go through
  ``hash(tuple(x.cpu().view(-1).tolist()))``: a Python float object (24 B) and a list slot (8 B) per element,
  and a tuple slot (8 B) more: about ``40 N d`` bytes of host memory for the widest input (plus ``e N d``
  for the host copy on an accelerator).
- **Update FLOPs per batch and input**: ``svd_lowrank`` on the (M = N + k + 1, d) stack: ``2 + 2 * 4`` products
  of it with a (d, q) or (M, q) block, ``2 M d q`` each, plus the small SVD of the (q, d) projection
  (``~ 4 q^2 d``); the mean and variance (``~ 4 N d``).

Peak extra (device) = everything held after the last batch + the largest one update's transient. The
hashing pass is reported apart: it is host memory, and on CPU it is usually peft's actual peak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["PeftPlan", "llama_inputs", "peft_plan"]

_NITER = 4  # IncrementalPCA's lowrank_niter default, which peft's SVDHook keeps
_SHARED = {"q_proj": "attention", "k_proj": "attention", "v_proj": "attention", "gate_proj": "mlp", "up_proj": "mlp"}


@dataclass(frozen=True)
class PeftPlan:
    """peft's EVA on one model and batch shape (bytes and FLOPs; per batch where it says so)."""

    inputs: int
    statistic_bytes: int
    update_transient_bytes: int
    hash_host_bytes: int
    update_flops: float

    @property
    def peak_extra_bytes(self) -> int:
        """Statistics held plus the largest update transient (device memory)."""
        return self.statistic_bytes + self.update_transient_bytes


def llama_inputs(model: nn.Module, targets: Sequence[str]) -> list[int]:
    """d_in of each distinct input peft would hook among the targeted ``nn.Linear`` names ``targets`` of a
    Llama-style model (q/k/v share one input, gate/up one)."""
    modules = dict(model.named_modules())
    widths: dict[str, int] = {}
    for name in targets:
        prefix, _, leaf = name.rpartition(".")
        group = f"{prefix.rpartition('.')[0]}.{_SHARED[leaf]}" if leaf in _SHARED else name
        widths.setdefault(group, int(modules[name].in_features))
    return list(widths.values())


def peft_plan(widths: Sequence[int], rows: int, rank: int, rho: float, element_bytes: int = 4) -> PeftPlan:
    """peft's figures for distinct inputs of ``widths`` fed ``rows`` rows per batch (tokens, B x T)."""
    k = round(rho * rank)
    q = 2 * k
    held = sum(8 * min(q, d) * d + 16 * d + 24 * min(q, d) + 12 for d in widths)
    stack = rows + k + 1

    def transient(d: int) -> int:
        cast = 4 * rows * d if element_bytes != 4 else 0
        return element_bytes * rows * d + cast + 4 * rows * d + 8 * stack * d + 24 * q * (stack + d)

    flops = sum((2 + 2 * _NITER) * 2 * stack * d * q + 4 * q * q * d + 4 * rows * d for d in widths)
    hashing = max((40 + (element_bytes if element_bytes != 4 else 0)) * rows * d for d in widths)
    return PeftPlan(
        inputs=len(widths), statistic_bytes=held, update_transient_bytes=max(transient(d) for d in widths),
        hash_host_bytes=hashing, update_flops=float(flops),
    )  # fmt: skip
