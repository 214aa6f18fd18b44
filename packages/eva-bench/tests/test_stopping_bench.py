"""The stopping benchmark's machinery (``benchmarks/bench_stopping.py --quick`` at tiny sizes) on the real
MiniLM and SST-2: the pool reference against a float64 eigendecomposition of the rows themselves, the rows
it counts against a fit's, and the scoring against a fit of the very pool batches (error 0)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

import eva_core
from eva_bench.engine import calibration, data, stopping, suite
from eva_bench.engine.reference import count_rows, pool_reference, subspace_error
from eva_core.errors import NotConvergedWarning

LAYER = "encoder.layer.0.attention.self.query"
TARGETS = r"encoder\.layer\.[01]\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense)"


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return suite.load_model("minilm")


@pytest.fixture(scope="module")
def batches() -> list[dict[str, torch.Tensor]]:
    """Six batches of 4 SST-2 sentences, each padded to its own length (so the masks matter)."""
    tokenizer = data.load_tokenizer("minilm")
    texts = data.sst2_sentences(24)
    out = []
    for start in range(0, len(texts), 4):
        encoded = tokenizer(texts[start : start + 4], padding=True, return_tensors="pt")
        out.append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    return out


def _rows_of(model: torch.nn.Module, batches: list[dict[str, Any]], name: str) -> torch.Tensor:
    """The unmasked input rows (N, d_in) of layer ``name`` over ``batches``, caught by a plain hook."""
    caught: list[torch.Tensor] = []
    mask: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: caught.append(args[0][mask["m"]]))
    with torch.no_grad():
        for batch in batches:
            mask["m"] = batch["attention_mask"].bool()
            model(**batch)
    handle.remove()
    return torch.cat(caught).double()


def test_reference_is_the_float64_eigendecomposition_of_the_masked_rows(model, batches) -> None:
    reference = pool_reference(model, batches[2:], TARGETS, k=6)
    leader_of, counted = count_rows(model, batches[:2], TARGETS)
    rows = _rows_of(model, batches[2:], LAYER)
    centered = rows - rows.mean(0)
    values, vectors = torch.linalg.eigh(centered.T @ centered)
    exact = vectors.flip(1)[:, :6].T  # (6, d_in)
    leader = reference.leader_of[LAYER]
    assert reference.rows[leader] == len(rows)
    assert leader_of == reference.leader_of
    assert counted[leader] == [int(b["attention_mask"].sum()) for b in batches[:2]]
    assert subspace_error(reference.vectors[leader], exact) < 1e-9
    assert torch.allclose(reference.values[leader][:6], values.flip(0)[:6], rtol=1e-6)
    assert reference.leader_of["encoder.layer.0.attention.self.key"] == leader  # q/k/v share one input


def test_a_fit_of_the_pool_itself_scores_zero(model, batches) -> None:
    pool, targets = batches[2:], TARGETS
    reference = pool_reference(model, pool, targets, k=16)
    with pytest.warns(NotConvergedWarning):  # every batch is measured: no layer may stop early
        state = eva_core.fit(
            model, pool, rank=8, rho=2.0, tau=1.0, target_modules=targets, progress=False, max_steps=len(pool),
            min_steps=len(pool),
        )  # fmt: skip
    run = {
        "method": "ours_tau", "batches": state.steps, "wall": 1.0, "cpu": 1.0, "converged": 0, "capped": False,
        "target_error": 0.05, "estimated": {name: 0.0 for name in state.layers},
        "layers": {name: {"components": layer.components, "rank": state.ranks[name], "rows": layer.rows,
                          "source": layer.source} for name, layer in state.layers.items()},
    }  # fmt: skip
    scored = calibration.score_run(run, reference, 8)
    assert scored["error_r"] < 1e-6 and scored["error_alloc_max"] < 1e-6
    assert scored["calibration"]["over_target"] == 0.0 and scored["calibration"]["layers"] == len(state.layers)


def test_quick_run_scores_every_method_and_checks_rows(model, batches) -> None:
    methods = ["ours", "ours_tau", "peft"]
    run = lambda job: stopping.execute(job, model)  # noqa: E731
    record = stopping.bench_model("minilm", methods, batches[:3], batches[3:], run, targets=TARGETS)
    labels = {s["label"] for s in record["summaries"]} | set(record["skipped"])
    assert labels == {stopping.METHODS[m]["label"] for m in methods}
    assert record["rows_check"].startswith("ok"), record["rows_check"]
    assert record["layers"] == 10 and record["pool"] == 3
    for summary in record["summaries"]:
        assert summary["batches"] <= 3 and 0.0 <= summary["error_alloc"] <= summary["error_alloc_max"] <= 1.0
    text = stopping.report([record])
    assert "peft (tau 0.99)" in text and "split-half" in text
    json.dumps(record, default=float)
    if stopping.new_rule_available():  # the subspace-error rule's runs are scored against its estimate
        assert "calibration" in next(s for s in record["summaries"] if s["method"] == "ours")
