"""Bytes a distributed fit exchanges per convergence check, exact statistics against the sketch.

W gloo processes on the CPU each fit a model made of one linear layer per distinct input of a Llama-shaped
decoder block (attention in, attention out, MLP in: d = 4096; down-projection in: d = 11008), fed random
rows, with ``check_every=1``. Every ``torch.distributed`` collective the fit calls is wrapped to add up the
bytes of the tensors each rank hands to it (its payload: the same on every rank, whatever algorithm the
backend runs), by phase: the per-batch agreement, each check (the exchange and the components' broadcast)
and the final read. The steady check (the last one: the first also agrees on the layers and, for exact
statistics, their shift) is set beside the formula below, which then gives the figures for Llama-2-7B and
Llama-2-70B on 8 ranks (rank 16, rho 2: k = 32 components, a sketch of l = ``sketch_width(32)`` rows).

Per check, per rank, per measured input of width d (float64 = 8 bytes, float32 = 4):

* exact: a reduce of the (d, d) float64 scatter, an all-reduce of its (d,) float64 shifted sum and of two
  float64 flags (rows, non-finite), a broadcast of k (d + 3) float32:
  ``8 d^2 + 8 d + 16 + 4 k (d + 3)``;
* sketch: a gather of the flushed sketch, (l d + 2 d + 10) float32 (l rows, the float64 mean and five
  float64 scalars bit-cast), an all-reduce of three float64 flags, the same broadcast:
  ``4 (l d + 2 d + 10) + 24 + 4 k (d + 3)``.

On the wire a ring or tree reduce moves about ``2 (W - 1) / W`` times the payload per rank; a gather brings
W - 1 blocks to each layer's owner, and each rank owns 1/W of the layers, so it also averages
``2 (W - 1) / W`` times the payload per rank.

Usage: ``python benchmarks/bench_distributed.py [--out docs/results/distributed_comm.json]`` (~5 min on 2
cores) or ``--quick`` (2 ranks, d = 256: a smoke test, ~20 s).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn

RANK, RHO = 16, 2.0
COMPONENTS = round(RANK * RHO)  # k
BLOCK = (4096, 4096, 4096, 11008)  # the distinct layer inputs of a Llama-2-7B decoder block
MODELS = {  # name -> (decoder blocks, distinct input widths of one block)
    "Llama-2-7B": (32, BLOCK),
    "Llama-2-70B": (80, (8192, 8192, 8192, 28672)),
}
ROWS, STEPS = 48, 3  # rows per rank per step (> k, so every layer has k components), steps (= checks)
# (world size, statistics, input widths) measured. Exact statistics keep to the 4096-wide inputs beyond 2 ranks
# (one at 8): W x 1.4 GB of Gram matrices for the whole block, and the owner's 11008-wide eigensolves, would
# crowd out the rest of this 2-core machine; the formula is per input, so the widths measured test it all
RUNS: tuple[tuple[int, tuple[str, ...], tuple[int, ...]], ...] = (
    (2, ("exact", "sketch"), BLOCK),
    (4, ("exact",), BLOCK[:3]), (4, ("sketch",), BLOCK),
    (8, ("exact",), BLOCK[:1]), (8, ("sketch",), BLOCK),
)  # fmt: skip
QUICK_RUNS: tuple[tuple[int, tuple[str, ...], tuple[int, ...]], ...] = ((2, ("exact", "sketch"), (256, 512)),)


def predicted_check_bytes(dims: tuple[int, ...], statistics: str, components: int, width: int) -> int:
    """The payload each rank hands to the collectives at one steady check (the module docstring's formula),
    for a sketch of ``width`` rows (at most d) per input."""
    total = 0
    for d in dims:
        broadcast = 4 * components * (d + 3)
        if statistics == "exact":
            total += 8 * d * d + 8 * d + 16 + broadcast
        else:
            total += 4 * (min(width, d) * d + 2 * d + 10) + 24 + broadcast
    return total


class _Inputs(nn.Module):
    """One linear layer per distinct input width, each fed its own rows ``x<i>``: (N, d_i)."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, 2 * COMPONENTS, bias=False) for d in dims)

    def forward(self, **rows: torch.Tensor) -> list[torch.Tensor]:
        return [layer(rows[f"x{i}"]) for i, layer in enumerate(self.layers)]


def _batches(dims: tuple[int, ...], rank: int) -> list[dict[str, torch.Tensor]]:
    """STEPS batches of ROWS random rows per input, with a decaying spectrum (std from 1 down to 0.01)."""
    generator = torch.Generator().manual_seed(rank)
    scales = [torch.logspace(0, -2, d) for d in dims]  # (d_i,) each
    return [
        {f"x{i}": torch.randn(ROWS, scale.shape[0], generator=generator) * scale for i, scale in enumerate(scales)}
        for _ in range(STEPS)
    ]


class _Meter:
    """Adds up the bytes of the tensors each wrapped collective is handed, by the phase the fit is in."""

    def __init__(self) -> None:
        self.phase = "setup"
        self.bytes: dict[str, dict[str, int]] = {}
        self.checks = 0

    def reset(self) -> None:
        self.bytes, self.checks = {}, 0

    def add(self, op: str, size: int) -> None:
        by_op = self.bytes.setdefault(self.phase, {})
        by_op[op] = by_op.get(op, 0) + size

    def wrap_collectives(self) -> None:
        import pickle

        import torch.distributed as dist

        def counting(op: str, original: Any) -> Any:
            def wrapped(tensor: Any, *args: Any, **kwargs: Any) -> Any:
                if op == "all_gather_object":
                    self.add(op, len(pickle.dumps(args[0])))  # this rank's object; args: (object,)
                else:
                    self.add(op, tensor.numel() * tensor.element_size())
                return original(tensor, *args, **kwargs)

            return wrapped

        for op in ("all_reduce", "reduce", "gather", "broadcast", "all_gather_object"):
            setattr(dist, op, counting(op, getattr(dist, op)))

    def phases(self, owner: Any, methods: dict[str, str]) -> None:
        """Set the phase while each named method of ``owner`` (a class) runs: ``{method: phase}``;
        ``"check"`` phases are numbered."""

        def entering(name: str, phase: str, original: Any) -> Any:
            def wrapped(*args: Any, **kwargs: Any) -> Any:
                before = self.phase
                if phase == "check":
                    self.checks += 1
                self.phase = f"check{self.checks}" if phase == "check" else phase
                try:
                    return original(*args, **kwargs)
                finally:
                    self.phase = before

            return wrapped

        for name, phase in methods.items():
            setattr(owner, name, entering(name, phase, getattr(owner, name)))


def child(rank: int, world: int, port: int, statistics: list[str], dims: tuple[int, ...], out: Path) -> None:
    """One rank: join the group, fit once per entry of ``statistics`` with every collective metered, and
    write the byte counts of each fit to ``out``."""
    import torch.distributed as dist

    import eva_core
    from eva_core.fitting import costs, loop
    from eva_core.fitting.distributed import TorchProcessGroup

    torch.set_num_threads(1)
    meter = _Meter()
    meter.wrap_collectives()
    meter.phases(TorchProcessGroup, {"step": "step"})
    meter.phases(loop._Fit, {"_check": "check", "result": "final"})  # instrumentation only
    widths: dict[str, int] = {}
    original = costs.StatisticsChooser.make

    def make(chooser: Any, name: str, dim: int, device: torch.device) -> Any:
        made = original(chooser, name, dim, device)
        widths[name] = int(getattr(made, "width", 0))
        return made

    costs.StatisticsChooser.make = make  # type: ignore[method-assign]
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(minutes=20)
    )
    records = {}
    try:
        for kind in statistics:
            meter.reset()
            widths.clear()
            started = time.perf_counter()
            eva_core.fit(_Inputs(dims), _batches(dims, rank), progress=False, distributed=True, **_settings(kind, dims))
            seconds = time.perf_counter() - started
            records[kind] = {"bytes": meter.bytes, "widths": dict(widths), "seconds": seconds}
    finally:
        dist.destroy_process_group()
    out.write_text(json.dumps(records))


def _settings(statistics: str, dims: tuple[int, ...]) -> dict[str, Any]:
    """The fit's settings for every input measured ``statistics`` ("exact" or "sketch")."""
    memory = 8 * sum(d * d for d in dims)
    return {"rank": RANK, "rho": RHO, "tau": 0.0, "min_steps": STEPS, "max_steps": STEPS, "check_every": 1,
            "statistics": statistics, "gram_memory_bytes": memory}  # fmt: skip


def planned_check_bytes(world: int, statistics: str, dims: tuple[int, ...]) -> int:
    """What ``eva_core.plan`` predicts each rank sends per check, from the model on the meta device."""
    import eva_core

    with torch.device("meta"):
        model = _Inputs(dims)
    batch = _batches(dims, 0)[0]
    return eva_core.plan(model, batch, world_size=world, **_settings(statistics, dims)).exchange_bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(world: int, statistics: tuple[str, ...], dims: tuple[int, ...], folder: Path) -> list[dict[str, Any]]:
    """Run ``world`` ranks fitting once per entry of ``statistics``; for each, the steady check's bytes per
    rank (the last check) beside the formula's."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = [folder / f"w{world}-rank{rank}.json" for rank in range(world)]
    shape = ",".join(map(str, dims))
    command = [sys.executable, "-m", __name__, "--child"]
    procs = [
        subprocess.Popen([*command, str(rank), str(world), str(port), ",".join(statistics), shape, str(out)], env=env)
        for rank, out in enumerate(outs)
    ]
    codes = [proc.wait() for proc in procs]
    if any(codes):
        raise RuntimeError(f"{statistics} on {world} ranks: exit codes {codes}")
    ranks = [json.loads(out.read_text()) for out in outs]
    rows = []
    for kind in statistics:
        records = [records[kind] for records in ranks]
        width = max(records[0]["widths"].values())  # the widest sketch's l (0: exact); narrower ones are capped at d
        rows.append({
            "world": world,
            "statistics": kind,
            "dims": list(dims),
            "sketch_width": width,
            "components": COMPONENTS,
            "check_bytes_per_rank": [sum(record["bytes"][f"check{STEPS}"].values()) for record in records],
            "predicted": predicted_check_bytes(dims, kind, COMPONENTS, width),
            "planned": planned_check_bytes(world, kind, dims),
            "first_check_bytes_per_rank": [sum(record["bytes"]["check1"].values()) for record in records],
            "step_bytes_per_rank": [sum(record["bytes"].get("step", {}).values()) // STEPS for record in records],
            "by_op_rank0": records[0]["bytes"],
            "wall_seconds": max(record["seconds"] for record in records),
        })  # fmt: skip
    return rows


def extrapolate(world: int = 8) -> list[dict[str, Any]]:
    """The formula's bytes per check per rank for Llama-2-7B and -70B on ``world`` ranks (rank 16, rho 2)."""
    from eva_core.svd.sketch import sketch_width

    width = sketch_width(COMPONENTS)
    rows = []
    for name, (blocks, dims) in MODELS.items():
        exact = blocks * predicted_check_bytes(dims, "exact", COMPONENTS, width)
        sketch = blocks * predicted_check_bytes(dims, "sketch", COMPONENTS, width)
        rows.append({"model": name, "world": world, "blocks": blocks, "dims": list(dims), "sketch_width": width,
                     "components": COMPONENTS, "exact_bytes": exact, "sketch_bytes": sketch})  # fmt: skip
    return rows


def table(measured: list[dict[str, Any]], models: list[dict[str, Any]]) -> str:
    """The markdown tables: measured against predicted, then the extrapolation."""
    lines = [
        "| ranks | statistics | inputs (d) | l | measured bytes / check / rank | predicted | fit (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in measured:
        got = sorted(set(row["check_bytes_per_rank"]))
        shown = " / ".join(f"{value:,}" for value in got)
        lines.append(
            f"| {row['world']} | {row['statistics']} | {', '.join(map(str, row['dims']))} | "
            f"{row['sketch_width'] or '-'} | {shown} | {row['predicted']:,} | {row['wall_seconds']:.0f} |"
        )
    lines += ["", "| model | ranks | exact: bytes / check / rank | sketch | ratio |", "|---|---|---|---|---|"]
    for row in models:
        lines.append(
            f"| {row['model']} ({row['blocks']} blocks, d = {', '.join(map(str, row['dims']))}, l = "
            f"{row['sketch_width']}, k = {row['components']}) | {row['world']} | {_size(row['exact_bytes'])} | "
            f"{_size(row['sketch_bytes'])} | {row['exact_bytes'] / row['sketch_bytes']:.0f}x |"
        )
    return "\n".join(lines)


def _size(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1000
    raise AssertionError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    parser.add_argument("--quick", action="store_true", help="2 ranks, small inputs: a smoke test")
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rank, world, port, statistics, dims, out = args.child
        child(
            int(rank), int(world), int(port), statistics.split(","), tuple(int(d) for d in dims.split(",")), Path(out)
        )
        return
    import tempfile

    measured = []
    with tempfile.TemporaryDirectory() as folder:
        for world, statistics, dims in QUICK_RUNS if args.quick else RUNS:
            for row in measure(world, statistics, dims, Path(folder)):
                measured.append(row)
                sys.stderr.write(f"{row['statistics']} on {world} ranks: {row['wall_seconds']:.0f} s\n")
    models = extrapolate()
    sys.stdout.write(table(measured, models) + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/bench_distributed.py" + (" --quick" if args.quick else "")
        record = {"command": command, "torch": torch.__version__, "measured": measured, "models": models}
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
