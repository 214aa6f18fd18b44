"""The scale benchmark (``benchmarks/bench_scale.py --quick``) and its accelerator mode (``bench_cuda.py``,
run here on the CPU in bf16 with ``check_every=2``) at tiny shapes, so neither script can rot: every method
runs, the statistics are of the kind asked for and their bytes are measured, and the tables render."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from eva_bench.engine import plan_table, scale, scale_runs
from eva_bench.engine.peft_plan import peft_plan


def _check(records: list[dict]) -> None:
    block, lm = records
    methods = [row["method"] for row in block["rows"]]
    assert methods[0] == "forward" and {"exact", "sketch", "peft"} <= set(methods)
    rows = {row["method"]: row for row in block["rows"]}
    d, hidden = 64, 176  # the tiny block: three 64-wide inputs (q/k/v, o, gate/up) and the 176-wide down input
    assert rows["exact"]["kinds"] == {"gram": 4}
    assert rows["exact"]["statistic_bytes"] >= 8 * (3 * d * d + hidden * hidden)  # the float64 scatters
    assert rows["sketch"]["kinds"] == {"sketch": 4}
    assert 0 < rows["sketch"]["statistic_bytes"] < rows["exact"]["statistic_bytes"]
    assert rows["peft"]["statistic_bytes"] > 0
    assert all(row["wall"] > 0 and row["cpu"] > 0 for row in block["rows"])
    overlap = lm["overlap"]
    assert overlap["inputs"] == 8  # two SmolLM2 blocks, four distinct inputs each
    assert all(0.0 <= value <= 1.0 for value in overlap["at_r"] + overlap["at_2r"])
    text = scale.report(records)
    assert "Llama" not in text and "decoder block (tiny)" in text and "SmolLM2" in text
    json.dumps(records, default=scale._plain)


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return scale.bench(scale._arguments(["--quick"]), scale.execute)


def test_quick_run_measures_every_method(records) -> None:
    _check(records)
    assert records[1]["overlap"]["at_r"][1] > 0.9  # 2 x 32 tokens: the sketch holds every row
    measured = next(row for row in records[0]["rows"] if row["method"] == "peft")["statistic_bytes"]
    predicted = peft_plan([64, 64, 64, 176], rows=2 * 16, rank=scale.RANK, rho=scale.RHO).statistic_bytes
    assert predicted == measured  # peft_plan's model of what peft holds, on the block


@pytest.mark.skipif(not plan_table.plan_available(), reason="this eva-core has no eva_core.plan yet")
def test_planner_predicts_the_measured_statistic_bytes(records) -> None:
    text = plan_table.check_report(records)
    lines = [line for line in text.splitlines() if line.startswith("| decoder block (tiny) |")]
    assert [line.split(" | ")[1] for line in lines] == [m for m in ("exact", "sketch", "auto") if f"| {m} |" in text]
    for line in lines:  # the exact statistics' bytes are known; a sketch's are at most the predicted ones
        method, ratio = line.split(" | ")[1], float(line.split(" | ")[4])
        assert 0.9 <= ratio <= 1.1 if method != "sketch" else ratio >= 1.0, line  # auto: exact at d = 64


def test_plan_table_renders_from_meta_models() -> None:
    text = plan_table.plan_report({"Llama-2-7B": {"sketch": {"statistic_bytes": 1e9, "peak_extra_bytes": 2e9,
                                                             "overhead": 0.1}}})  # fmt: skip
    assert "| Llama-2-7B | ours (sketch) | 1.00 | 2.00 | 0.100 |" in text
    assert text.count("| peft |") == 3 and "27.5" in text
    assert 50e12 < plan_table.forward_flops("Llama-2-7B") < 60e12  # ~2 x 6.7e9 FLOPs per token, 4096 tokens


def test_accelerator_mode_runs_in_bf16_on_cpu() -> None:
    args = scale._arguments(["--quick", "--device", "cpu", "--dtype", "bfloat16", "--check-every", "2"])
    seen: list[dict] = []

    def run(job: dict) -> dict:
        seen.append(job)
        return scale.execute(job)

    _check(scale.bench(args, run))
    assert {job["dtype"] for job in seen} == {"bfloat16"} and {job["check_every"] for job in seen} == {2}


def test_a_job_runs_in_its_own_process(tmp_path) -> None:
    job = {"subject": "block", "shape": "tiny", "method": "forward", "device": "cpu", "dtype": "float32",
           "batches": 2, "size": 1, "tokens": 4}  # fmt: skip
    result = scale.spawn(job, tmp_path)
    assert result["batches"] == 2 and result["peak"] > 0


def test_statistics_fields_force_the_kind() -> None:
    for mode, kind in (("exact", "gram"), ("sketch", "sketch")):
        model = scale.subjects.build_block("tiny")
        stats = scale_runs.StatisticBytes()
        with stats.recording():
            scale_runs._fit(model, scale.subjects.block_batches("tiny", 1, 1, 8), None, mode, 1)
        assert set(stats.kinds()) == {kind}


@pytest.mark.parametrize("gap", [0.5, 0.0])
def test_overlap_counts_gapped_inputs(gap: float) -> None:
    basis = torch.linalg.qr(torch.randn(40, 40, dtype=torch.float64))[0].T  # (40, 40) orthonormal rows
    values = torch.cat([torch.full((16,), 2.0), torch.full((24,), 2.0 * (1 - gap))])
    exact = {"x": {"components": basis[:32], "variance": values[:32]}}
    swapped = torch.cat([basis[:15], basis[16:17], basis[15:16], basis[17:32]])  # components 16 and 17 swapped
    result = scale.overlaps(exact, {"x": {"components": swapped}}, 16)
    assert math.isclose(result["at_r"][0], 15 / 16) and math.isclose(result["at_2r"][0], 1.0)
    assert result["gapped"] == (1 if gap >= scale.GAP else 0)


@pytest.mark.parametrize("name", ["scale_block", "scale_models"])
def test_the_committed_tables_are_what_their_records_render_to(name: str) -> None:
    """The measured tables of docs/results/<name>.md come from the committed records (the planner's tables
    after them are recomputed by ``bench_scale.py --records``, which renders the whole page)."""
    results = Path(__file__).resolve().parents[3] / "docs" / "results"
    loaded = json.loads((results / f"{name}.json").read_text())
    page = (results / f"{name}.md").read_text()
    assert page.startswith(scale.report(loaded["records"], "peak RSS") + "\n\n")
    assert page.rstrip("\n").endswith(loaded["footer"])
