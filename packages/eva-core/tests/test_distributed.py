"""Distributed fits: 2 and 3 gloo processes on the CPU against one process fitting the union of their batches.

Each test starts real processes (this file run as a script, one per rank) that join a gloo process group
over TCP on localhost, fit the tiny model on their own shard and save their state; the test compares
every rank's state with a single-process fit on all the batches.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from eva_core import EvaState, fit
from eva_core.capture import InputRecorder
from eva_core.errors import InvalidConfigError, NotConvergedWarning
from eva_core.fitting.distributed import join_process_group
from eva_core.fitting.process_group import SingleProcess
from eva_core.svd import GramStatistics

HERE = Path(__file__).resolve()
BATCHES = 6
SETTINGS = {"rank": 4, "rho": 2.0, "tau": 0.0, "progress": False}
ERROR_RULE = {"tau": None, "target_error": 0.2, "min_steps": 2}
ERROR_RULE_BATCHES = 16
SPLITS = {  # scenario -> world size -> batch indices of each rank
    "even": {2: [[0, 2, 4], [1, 3, 5]], 3: [[0, 3], [1, 4], [2, 5]]},
    "uneven": {2: [[0, 1, 2, 3, 4], [5]], 3: [[0, 1, 2, 3], [4, 5], []]},
}
SPLITS["sketch_uneven"] = SPLITS["uneven"]
# Every layer sketched, or the first three 16-wide inputs exact (8 * 16^2 bytes each) and the rest sketched.
MIXED_BYTES = 3 * 8 * 16 * 16
MEMORY = {"sketch": 0, "sketch_uneven": 0, "sketch_resume": 0, "mixed": MIXED_BYTES}


def shard(scenario: str, world: int, rank: int) -> list[dict]:
    from conftest import token_batches

    batches = token_batches(ERROR_RULE_BATCHES if scenario == "error_rule" else BATCHES)
    if scenario in SPLITS:
        return [batches[i] for i in SPLITS[scenario][world][rank]]
    return batches[rank::world]


class Failing:
    """Yields ``batches`` but fails (raises, or kills the process) before batch ``at``."""

    def __init__(self, batches: list[dict], how: str, at: int = 1) -> None:
        self.batches, self.how, self.at = batches, how, at

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i, batch in enumerate(self.batches):
            if i == self.at and self.how == "raises":
                raise RuntimeError("boom: this rank's data loader broke")
            if i == self.at and self.how == "dies":
                os._exit(17)
            yield batch


def worker(scenarios: list[str], rank: int, world: int, port: int, out: Path) -> int:
    """One rank: join the group, fit its shard of each scenario in turn (one process group for all: a
    failed fit leaves the group usable) and save the state (or the error) under ``out/<scenario>``."""
    import torch.distributed as dist
    from conftest import tiny_model

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )
    code = 0
    try:
        for scenario in scenarios:
            folder = out / scenario
            folder.mkdir(exist_ok=True)
            batches: object = shard(scenario, world, rank)
            if scenario in ("raises", "dies") and rank == 1:
                batches = Failing(batches, scenario)  # type: ignore[arg-type]
            steps = max(len(shard(scenario, world, r)) for r in range(world))
            settings = {"min_steps": steps, "max_steps": steps, **SETTINGS}
            if scenario in MEMORY:  # some or all layers measured with the streaming sketch
                settings["gram_memory_bytes"] = MEMORY[scenario]
            if scenario == "error_rule":  # layers stop on their estimated subspace error, at different steps
                settings.update(ERROR_RULE)
            if scenario == "every2":  # checks at step 2 only; the data runs out after step 3, unchecked
                settings.update(check_every=2, min_steps=3, max_steps=200)
            try:
                if scenario.endswith("resume"):  # rank 1 breaks before its 3rd batch, then every rank resumes
                    checkpoints = {"checkpoint_dir": folder / "checkpoints", "checkpoint_every": 1}
                    broken = Failing(batches, "raises", at=2) if rank == 1 else batches  # type: ignore[arg-type]
                    with pytest.raises(RuntimeError):  # DistributedFitError on rank 0
                        fit(tiny_model(0), broken, **checkpoints, **settings)  # type: ignore[arg-type]
                    state = fit(tiny_model(0), batches, resume=True, **checkpoints, **settings)  # type: ignore[arg-type]
                else:
                    state = fit(tiny_model(0), batches, **settings)  # type: ignore[arg-type]
            except Exception as exc:
                (folder / f"rank{rank}.error").write_text(f"{type(exc).__name__}: {exc}")
                code = 3
            else:
                state.save(folder / f"rank{rank}")
    finally:
        dist.destroy_process_group()
    return code


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(scenarios: list[str], world: int, out: Path, timeout: float = 90.0) -> list[int]:
    """Run ``world`` ranks to the end; their exit codes (every process must exit before ``timeout``)."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in range(world):
        with open(out / f"rank{rank}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE), ",".join(scenarios), str(rank), str(world), str(port), str(out)],
                    env=env,
                    cwd=HERE.parent,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    deadline = time.monotonic() + timeout
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return codes


def single_process_state(**settings: object) -> EvaState:
    from conftest import tiny_model, token_batches

    return fit(tiny_model(0), token_batches(BATCHES), min_steps=BATCHES, max_steps=BATCHES, **SETTINGS, **settings)


def assert_same_fit(state: EvaState, reference: EvaState, converged: bool = True) -> float:
    """Spectra, rows and ranks allclose; components up to sign. Returns the largest component difference."""
    assert state.ranks == reference.ranks
    assert list(state.layers) == list(reference.layers)
    worst = 0.0
    for name, ref in reference.layers.items():
        layer = state.layers[name]
        assert (layer.rows, layer.source) == (ref.rows, ref.source), name
        assert not converged or layer.converged == ref.converged, name
        torch.testing.assert_close(layer.singular_values, ref.singular_values, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.explained_variance, ref.explained_variance, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(layer.explained_variance_ratio, ref.explained_variance_ratio, rtol=1e-4, atol=1e-6)
        signs = torch.sign((layer.components * ref.components).sum(dim=1, keepdim=True))  # (k, 1)
        difference = (layer.components * signs - ref.components).abs().max().item()
        worst = max(worst, difference)
        assert difference < 1e-3, (name, difference)
    return worst


@pytest.fixture(scope="module")
def reference() -> EvaState:
    torch.set_num_threads(1)
    os.environ.setdefault("EVA_DISABLE_PLUGINS", "*")
    return single_process_state()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Two ranks fitting the even split, the uneven split, a fit where rank 1 raises, a fit resumed from
    the checkpoints of a fit that rank 1 broke, and fits with sketched layers (one process group)."""
    out = tmp_path_factory.mktemp("two")
    scenarios = ["even", "uneven", "raises", "resume", "every2", "error_rule", *MEMORY]
    return out, launch(scenarios, 2, out)


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    out = tmp_path_factory.mktemp("three")
    return out, launch(["even", "uneven"], 3, out)


@pytest.mark.parametrize(("scenario", "world"), [("even", 2), ("even", 3), ("uneven", 2), ("uneven", 3), ("resume", 2)])
def test_every_rank_equals_a_single_process_fit(request, reference, scenario, world) -> None:
    """Every rank returns the same state, equal to one process fitting all batches; in ``uneven`` one rank
    runs out early (and with 3 ranks one has no batch at all) while the others go on; ``resume`` continues
    from the checkpoints (one file per rank) of a fit that stopped after 2 of 3 steps."""
    out, _ = request.getfixturevalue("two_ranks" if world == 2 else "three_ranks")
    folder = out / scenario
    logs = [(out / f"rank{r}.log").read_text()[-2000:] for r in range(world)]
    assert not list(folder.glob("*.error")), logs
    states = [EvaState.load(folder / f"rank{rank}") for rank in range(world)]
    for state in states:
        worst = assert_same_fit(state, reference)
        assert worst < 1e-3
        assert state.extra["world_size"] == world
        assert state.extra["batches"] == BATCHES
        assert state.steps == max(len(shard(scenario, world, rank)) for rank in range(world))
    for state in states[1:]:  # identical, not just close: the components were broadcast
        for name, layer in state.layers.items():
            assert torch.equal(layer.components, states[0].layers[name].components), name
        assert state.ranks == states[0].ranks


def test_the_error_rule_stops_layers_as_one_process_on_the_merged_batches(two_ranks) -> None:
    """With the subspace-error rule, each step of two ranks is one step of a single process fed both ranks'
    batches at once: the same layers stop at the same steps, with the same estimates and spectra."""
    from conftest import tiny_model, token_batches

    out, _ = two_ranks
    folder = out / "error_rule"
    assert not list(folder.glob("*.error")), [(out / f"rank{r}.log").read_text()[-2000:] for r in range(2)]
    batches = token_batches(ERROR_RULE_BATCHES)
    merged = [{key: torch.cat([first[key], second[key]]) for key in first} for first, second in
              zip(batches[0::2], batches[1::2], strict=True)]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotConvergedWarning)
        reference = fit(tiny_model(0), merged, max_steps=len(merged), **{**SETTINGS, **ERROR_RULE})
    stops = {layer.converged_at for layer in reference.layers.values()}
    assert len(stops) > 1, stops  # the rule stopped layers at different steps
    for rank in range(2):
        state = EvaState.load(folder / f"rank{rank}")
        assert_same_fit(state, reference)
        assert {n: layer.converged_at for n, layer in state.layers.items()} == {
            n: layer.converged_at for n, layer in reference.layers.items()
        }
        for name, estimate in reference.extra["estimated_error"].items():
            assert state.extra["estimated_error"][name] == pytest.approx(estimate, rel=1e-3, abs=1e-6), name


def test_a_rank_that_raises_stops_every_rank(two_ranks) -> None:
    out, codes = two_ranks
    assert codes == [3, 3]  # every process exited, both reporting the failure
    failing = (out / "raises" / "rank1.error").read_text()
    assert failing.startswith("RuntimeError: boom: this rank's data loader broke")
    other = (out / "raises" / "rank0.error").read_text()
    assert other.startswith("DistributedFitError: EVA fit on rank 0: rank(s) [1] of 2 raised")


def test_rows_after_the_last_check_are_merged(two_ranks, reference) -> None:
    """With check_every=2 and 3 steps of data, the rows of step 3 reach the final state all the same."""
    out, _ = two_ranks
    states = [EvaState.load(out / "every2" / f"rank{rank}") for rank in range(2)]
    for state in states:
        assert state.steps == 3
        assert not any(layer.converged for layer in state.layers.values())  # the data ran out first
        assert_same_fit(state, reference, converged=False)


@pytest.mark.parametrize("scenario", ["sketch", "sketch_uneven", "sketch_resume", "mixed"])
def test_sketches_merge_across_ranks(two_ranks, scenario) -> None:
    """Sketched layers (every layer, or all but three exact ones in ``mixed``) merge across ranks: with an
    even split, a rank out of batches after one step, or resumed from the checkpoints of a broken fit, both
    ranks return the same state as one process fitting every batch with the same settings. Layers 16 wide
    fit in their sketch (l = 16), so no fold drops anything and the match is tight; the 32-wide ones
    (l = 24) drop a little at each fold, so they are held to the sketch's guarantee against the exact
    spectrum (every variance a lower bound) and to the exact top components."""
    out, _ = two_ranks
    folder = out / scenario
    assert not list(folder.glob("*.error")), [(out / f"rank{r}.log").read_text()[-2000:] for r in range(2)]
    sketched = single_process_state(gram_memory_bytes=MEMORY[scenario])
    exact = single_process_state()
    states = [EvaState.load(folder / f"rank{rank}") for rank in range(2)]
    narrow = {name for name, layer in sketched.layers.items() if layer.components.shape[1] <= 16}
    for state in states:
        assert state.ranks == sketched.ranks
        assert state.extra["batches"] == BATCHES
        assert_same_fit(_only(state, narrow), _only(sketched, narrow))
        for name, layer in state.layers.items():
            if name not in narrow:
                assert layer.rows == exact.layers[name].rows
                assert_close_from_below(layer, exact.layers[name])
    for name, layer in states[1].layers.items():  # identical, not just close: the components were broadcast
        assert torch.equal(layer.components, states[0].layers[name].components), name


def test_a_packed_sketch_carries_everything_the_merge_needs(make_rows) -> None:
    """The block a rank sends (its sketch folded to at most l rows, the float64 mean, count, total variance,
    residual and finiteness) merges on the owner as the sketch itself would: exactly the sketch of all rows
    while they fit (l = d_in), and with the residuals added once the sender's fold drops something."""
    from eva_core.fitting.shared import SharedSketch
    from eva_core.svd import SketchStatistics

    first, second = make_rows(40, 12, seed=1), make_rows(30, 12, seed=2, offset=3.0)  # (N, d_in)
    for width in (12, 4):
        owner, sender = (SharedSketch(SketchStatistics(12, width, "cpu"), None) for _ in range(2))  # type: ignore[arg-type]
        owner.update(first)
        sender.update(second)
        block = sender.packed()
        assert block.shape == (sender.block_size(),)
        owner.absorb([block])
        alone = SketchStatistics(12, width, "cpu")
        alone.update(first)
        alone.merge(sender.local)  # the sender's sketch as folded for sending
        assert float(owner.local.count) == 70.0
        assert float(owner.local.residual) == pytest.approx(float(alone.residual), rel=1e-12, abs=1e-12)
        torch.testing.assert_close(owner.local.mean, torch.cat([first, second]).double().mean(dim=0))
        torch.testing.assert_close(owner.local.total, alone.total)
        centered = torch.cat([first, second]).double()
        centered -= centered.mean(dim=0)
        expected = torch.linalg.eigvalsh(centered.T @ centered).flip(0)[:4] / 69  # (4,) exact variances
        got = owner.local.top(4).explained_variance.double()
        if width == 12:
            assert float(owner.local.residual) < 1e-4
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        else:
            assert float(owner.local.residual) > 0
            assert bool((got <= expected * (1 + 1e-5)).all())


def _only(state: EvaState, layers: set[str]) -> EvaState:
    """``state`` restricted to ``layers`` (spectra and ranks), for comparing part of a fit."""
    import copy

    part = copy.copy(state)
    part.layers = {name: layer for name, layer in state.layers.items() if name in layers}
    part.ranks = {name: rank for name, rank in state.ranks.items() if name in layers}
    return part


def assert_close_from_below(layer, exact) -> None:
    """A sketch's variances are lower bounds of the exact ones (within its residual: here well under 0.1 %),
    and its top ``rank`` components span the exact ones' subspace."""
    ratio = layer.explained_variance / exact.explained_variance  # (k,)
    assert bool((ratio <= 1 + 1e-5).all()), ratio
    assert bool((ratio >= 1 - 1e-3).all()), ratio
    r = SETTINGS["rank"]
    overlap = torch.linalg.svdvals(layer.components[:r] @ exact.components[:r].T).pow(2).sum() / r
    assert overlap > 0.999


@pytest.mark.skipif(
    tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < (2, 13),
    reason="torch < 2.13 does not bound the wait by gloo's timeout: with torch 2.2 (the lowest session) the "
    "surviving rank was still waiting after 120 s; docs/distributed.md says so",
)
def test_a_rank_that_dies_does_not_hang_the_others(tmp_path) -> None:
    """A killed process cannot say so; the others get the process group's error (at the latest after its
    timeout, here 30 s) instead of waiting for ever. The bound leaves room for two processes importing torch on
    a loaded 2-core machine (the lowest session's torch 2.2 CUDA build took the 60 s it had once)."""
    started = time.monotonic()
    codes = launch(["dies"], 2, tmp_path, timeout=120)
    assert codes == [3, 17]
    assert (tmp_path / "dies" / "rank0.error").read_text()  # gloo reports the lost peer
    assert time.monotonic() - started < 120


def test_distributed_true_needs_a_process_group(make_model, batches) -> None:
    with pytest.raises(InvalidConfigError, match=r"distributed=True but torch\.distributed is not initialized"):
        fit(make_model(0), batches, distributed=True, **SETTINGS)


def test_distributed_setting_is_validated() -> None:
    from eva_core import EvaConfig

    with pytest.raises(InvalidConfigError, match=r"EvaConfig\.distributed='yes' is invalid"):
        EvaConfig(distributed="yes")  # type: ignore[arg-type]


def test_a_single_process_is_a_group_of_one() -> None:
    """Without a process group the fit runs on ``SingleProcess``: every action runs at once, nothing is
    exchanged, and the statistics are the plain ones."""
    assert isinstance(join_process_group(None), SingleProcess)  # torch.distributed is not initialized here
    assert isinstance(join_process_group(False), SingleProcess)
    group = join_process_group(None)

    def make(name: str, dim: int, device: torch.device) -> GramStatistics:
        return GramStatistics(dim, device)

    def failing() -> bool:
        raise RuntimeError("boom: this process's data loader broke")

    recorder = InputRecorder({}, {}, make)
    assert group.statistics_factory(make) is make
    assert (group.rank, group.size, group.layout_pending) == (0, 1, False)
    assert group.step(lambda: True, recorder) is True
    assert group.step(lambda: False, recorder) is False
    assert group.agree(lambda: "loaded", "while loading") == "loaded"
    assert group.gather([2, 4]) == [[2, 4]]
    group.sync(recorder)
    group.resume(True, recorder)
    assert group.layout_pending is False
    assert group.summary(consumed=5) == {}
    with pytest.raises(RuntimeError, match="boom"):
        group.step(failing, recorder)
    with pytest.raises(RuntimeError, match="boom"):
        group.agree(failing, "while loading")


def test_a_single_process_fit_records_no_world(make_model, batches) -> None:
    state = fit(make_model(0), batches, **SETTINGS)
    assert "world_size" not in state.extra
    assert "batches" not in state.extra


if __name__ == "__main__":
    name, rank_, world_, port_, out_ = sys.argv[1:]
    sys.exit(worker(name.split(","), int(rank_), int(world_), int(port_), Path(out_)))
