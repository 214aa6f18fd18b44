"""The communication benchmark's formula against what a 2-rank gloo fit hands its collectives
(``benchmarks/bench_distributed.py --quick`` at tiny widths): the figures in docs/distributed.md are only as
good as this match."""

from __future__ import annotations

from eva_bench.engine import distributed_comm


def test_measured_bytes_per_check_match_the_formula(tmp_path) -> None:
    """A 40-wide input (its sketch capped at d = 40 rows) and a 120-wide one (l rows), exact statistics then
    sketches, in one process group."""
    exact, sketch = distributed_comm.measure(2, ("exact", "sketch"), (40, 120), tmp_path)
    for row in (exact, sketch):
        assert row["check_bytes_per_rank"] == [row["predicted"]] * 2, row["by_op_rank0"]
        assert row["planned"] == row["predicted"]  # eva_core.plan's exchange figure is the metered one
        assert row["step_bytes_per_rank"] == [8 * (2 + 2)] * 2  # the per-batch agreement flags
    assert exact["sketch_width"] == 0
    assert 40 < sketch["sketch_width"] < 120  # one sketch capped at its width, one not
    assert sketch["by_op_rank0"][f"check{distributed_comm.STEPS}"].keys() == {"all_reduce", "gather", "broadcast"}
