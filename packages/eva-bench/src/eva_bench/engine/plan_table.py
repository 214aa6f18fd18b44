"""The planner's figures at 7B-70B scale beside peft's EVA and the paper's, from configs alone (no weights).

Each model is built on the meta device from its transformers config (``LlamaForCausalLM``), and
``eva_core.plan`` predicts our fit at rank 16, rho 2, batches of 8 x 512 tokens, for each
``EvaConfig.statistics`` (``auto``, ``exact``, ``sketch``); :func:`eva_bench.engine.peft_plan.peft_plan`
predicts peft's EVA on the same targets and batches. Overheads are update FLOPs per batch over the forward's
FLOPs (:func:`forward_flops`), the same denominator for both.

The paper reports EVA's peak memory on Llama-2-7B as 27.5 GB: the whole process, the bf16 weights (13.5 GB)
included. The tables here compare only the part EVA adds to a forward pass (statistics and transients);
the paper's figure minus the weights is printed beside them for scale, not as a like-for-like figure.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .peft_plan import PeftPlan, llama_inputs, peft_plan

__all__ = [
    "LLAMAS", "PAPER_PEAK_GB", "check_report", "forward_flops", "meta_llama", "ours_rows", "peft_row", "plan_available",
    "plan_report",
]  # fmt: skip

LLAMAS: dict[str, dict[str, int]] = {
    "Llama-2-7B": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000},
    "Llama-3-8B": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256},
    "Llama-2-70B": {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000},
}  # fmt: skip
"""The transformers ``LlamaConfig`` fields of each model."""

PAPER_PEAK_GB = 27.5
"""EVA's peak memory on Llama-2-7B in the EVA paper (whole process, bf16 weights included)."""

BATCH, TOKENS, RANK, RHO = 8, 512, 16, 2.0
MODES = ("auto", "exact", "sketch")
BUDGETS = {"auto": 20 * 2**30, "exact": 2**40, "sketch": 20 * 2**30}
"""``gram_memory_bytes`` per mode, fixed so that the table does not depend on this machine's free memory:
20 GiB (a quarter of an 80 GB accelerator) for ``auto``; 1 TiB, so that every input is exact, for ``exact``."""
TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
"""Every projection of every block: peft's and our LLM default on Llama."""


def meta_llama(name: str) -> nn.Module:
    """``LlamaForCausalLM`` of ``LLAMAS[name]`` on the meta device (no memory, no weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(LlamaConfig(**LLAMAS[name]))


def forward_flops(name: str, batch: int = BATCH, tokens: int = TOKENS) -> float:
    """FLOPs of one forward pass over ``batch`` sequences of ``tokens``: twice the multiply-adds of every
    linear layer and the LM head per token, plus causal attention (``2 T d`` per token and block: half of
    the ``Q K^T`` and ``A V`` products)."""
    c = LLAMAS[name]
    d, inner = c["hidden_size"], c["intermediate_size"]
    kv = d // c["num_attention_heads"] * c["num_key_value_heads"]
    per_block = 2 * (2 * d * d + 2 * d * kv + 3 * d * inner) + 2 * tokens * d
    return float(batch * tokens * (c["num_hidden_layers"] * per_block + 2 * d * c["vocab_size"]))


def _targets(model: nn.Module) -> list[str]:
    import re

    pattern = re.compile(TARGETS)
    return [name for name, _ in model.named_modules() if pattern.fullmatch(name)]


def plan_available() -> bool:
    """Whether this eva-core has ``eva_core.plan``."""
    import eva_core

    return hasattr(eva_core, "plan")


def _plan(model: nn.Module, batch: Any, mode: str, **fields: Any) -> Any:
    import eva_core

    return eva_core.plan(model, batch, rank=RANK, rho=RHO, statistics=mode, gram_memory_bytes=BUDGETS[mode], **fields)


def ours_rows(name: str) -> dict[str, dict[str, Any]]:
    """``eva_core.plan`` of model ``name`` per statistics mode: statistic and peak extra bytes, overhead."""
    model = meta_llama(name)
    batch = {"input_ids": torch.zeros(BATCH, TOKENS, dtype=torch.long, device="meta")}
    rows = {}
    for mode in MODES:
        plan = _plan(model, batch, mode, target_modules=TARGETS)
        kinds = list(plan.kinds().values())
        rows[mode] = {
            "statistic_bytes": plan.statistic_bytes, "peak_extra_bytes": plan.peak_bytes, "overhead": plan.overhead,
            "forward_flops": plan.forward_flops, "exact": kinds.count("exact"), "sketch": kinds.count("sketch"),
        }  # fmt: skip
    return rows


def peft_row(name: str, element_bytes: int = 2, forward: float | None = None) -> tuple[PeftPlan, float]:
    """peft's plan on model ``name`` (bf16 activations by default) and its update FLOPs over the forward's
    (``forward``, e.g. the planner's count, or :func:`forward_flops`)."""
    model = meta_llama(name)
    plan = peft_plan(llama_inputs(model, _targets(model)), BATCH * TOKENS, RANK, RHO, element_bytes)
    return plan, plan.update_flops / (forward or forward_flops(name))


def _gb(n: float) -> str:
    return "-" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n / 1e9:.2f}"


def plan_report(ours: dict[str, dict[str, dict[str, Any]]] | None = None) -> str:
    """The planner table: per model, peft's row and (``ours``: model -> statistics mode -> ``{"statistic_bytes",
    "peak_extra_bytes", "overhead"}``) our rows; then the paper's figure."""
    head = ("model", "method", "statistic GB", "predicted peak extra GB", "update / forward (FLOPs)",
            "peft hashing pass, host GB")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in LLAMAS:
        mine = (ours or {}).get(name, {})
        for mode, row in mine.items():
            split = f" ({row['exact']} exact, {row['sketch']} sketch)" if "exact" in row else ""
            lines.append(
                f"| {name} | ours ({mode}){split} | {_gb(row['statistic_bytes'])} | {_gb(row['peak_extra_bytes'])} | "
                f"{row['overhead']:.3f} | - |"
            )
        forward = next((row["forward_flops"] for row in mine.values() if "forward_flops" in row), None)
        peft, overhead = peft_row(name, forward=forward)
        lines.append(
            f"| {name} | peft | {_gb(peft.statistic_bytes)} | {_gb(peft.peak_extra_bytes)} | {overhead:.3f} | "
            f"{_gb(peft.hash_host_bytes)} |"
        )
    weights = 2 * 6.74e9  # Llama-2-7B's parameters in bf16
    lines.append(
        f"| Llama-2-7B | paper's EVA (whole process) | - | {PAPER_PEAK_GB:.1f} total; "
        f"{PAPER_PEAK_GB - weights / 1e9:.1f} beyond the bf16 weights | - | - |"
    )
    return "\n".join(lines)


def _planned_subject(job: dict[str, Any]) -> tuple[nn.Module, Any]:
    """The benchmarked subject of ``job`` on the meta device and a batch of its shape."""
    from .scale_subjects import BLOCK_SHAPES, DecoderBlock

    if job["subject"] == "block":
        from transformers import LlamaConfig

        config = LlamaConfig(**BLOCK_SHAPES[job["shape"]])
        config._attn_implementation = "sdpa"
        with torch.device("meta"):
            model: nn.Module = DecoderBlock(config)
        width = BLOCK_SHAPES[job["shape"]]["hidden_size"]
        return model, torch.empty(job["size"], job["tokens"], width, device="meta")
    from transformers import AutoConfig, AutoModelForCausalLM

    from .scale_subjects import model_config

    config = job["config"] if "config" in job else model_config(job["subject"])  # records before it kept one
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    return model, {"input_ids": torch.zeros(job["size"], job["tokens"], dtype=torch.long, device="meta")}


def check_report(records: list[dict[str, Any]]) -> str:
    """Predicted (``eva_core.plan`` on the same subject, settings and batch shape) against measured statistic
    bytes and peak extra memory, for every fit of the scale benchmark's ``records``."""
    import eva_core

    from .scale_runs import FIT_METHODS, statistics_fields

    head = ("subject", "method", "statistics MiB predicted", "measured", "predicted / measured",
            "peak extra MiB predicted", "measured")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for record in records:
        job = record["settings"]
        model, batch = _planned_subject(job)
        for row in record["rows"]:
            if row["method"] not in FIT_METHODS:
                continue
            fields = {
                **statistics_fields(row["method"]),
                **({"target_modules": job["targets"]} if job.get("targets") else {}),
            }
            plan = eva_core.plan(model, batch, rank=job.get("rank", RANK), rho=job.get("rho", RHO), **fields)
            measured, mib = row["statistic_bytes"] or math.nan, 2**20
            cells = (plan.statistic_bytes / mib, measured / mib, plan.statistic_bytes / measured)
            peaks = (plan.peak_bytes / mib, row["peak_extra"] / mib)
            lines.append(
                f"| {row['subject']} | {row['method']} | {cells[0]:,.1f} | {cells[1]:,.1f} | {cells[2]:.3f} | "
                f"{peaks[0]:,.0f} | {peaks[1]:,.0f} |"
            )
    return "\n".join(lines)
