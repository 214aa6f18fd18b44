"""The sketch benchmark's machinery (``benchmarks/bench_sketch.py``): its reference is the exact SVD, it
scores a perfect answer as perfect, and the committed table is what its committed records render to."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from eva_bench.engine import sketch_accuracy
from eva_bench.engine.sketch_accuracy import _Layer, measure_synthetic, report

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results"


def test_a_layer_that_never_folded_scores_the_exact_svd() -> None:
    """Fewer rows than the sketch folds at: the sketch is the exact SVD, so its overlap is 1 and its
    variances exact; the reference is checked against an SVD of the centered rows themselves."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 12, generator=generator) * torch.linspace(2.0, 0.1, 12) + 5.0
    layer = _Layer(12, k=3)
    layer.add(rows[:25])
    layer.add(rows[25:])
    scored = layer.score(3)
    assert scored["overlap"]["ours"] > 1 - 1e-6
    assert scored["variance_error"]["ours"] < 1e-5
    singular = torch.linalg.svdvals(rows.double() - rows.double().mean(dim=0))
    assert abs(scored["gap"] - float((singular[2] ** 2 - singular[3] ** 2) / singular[2] ** 2)) < 1e-9
    assert scored["rows"] == 40 and set(scored["cpu_per_batch"]) == {"ours", "gram", "peft"}


def test_synthetic_rows_are_sketched_accurately() -> None:
    record = measure_synthetic(96, 3, rows=200, k=4)
    (layer,) = record["layers"].values()
    assert layer["overlap"]["ours"] > 0.99
    assert "synthetic d=96" in report([record])


def test_the_committed_table_is_what_its_records_render_to() -> None:
    results = RESULTS
    records = json.loads((results / "sketch.json").read_text())
    assert report(records) + "\n" == (results / "sketch.md").read_text()
    assert {record["model"] for record in records} >= {"minilm", "smollm2", "gemma3-270m"}
    assert records[0]["k"] == sketch_accuracy.K
