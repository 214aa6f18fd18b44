"""``eva_core.plan`` predicts what a fit holds, and the exact/sketch choice it shares with the fit."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from conftest import TinyModel, tiny_model, token_batches
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import eva_core.fitting.costs as costs
from eva_core import EvaConfig, Plan, PluginManager, fit, hookimpl, plan, plugin_manager
from eva_core.cli import domains
from eva_core.cli.main import main
from eva_core.cli.parser import build_parser
from eva_core.errors import InvalidConfigError, MetaDeviceError
from eva_core.fitting.costs import EXACT_COST_FACTOR, StatisticsChooser, gram_budget

SETTINGS = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": 3, "max_steps": 3, "progress": False}  # k = 8, l = 24


class Widening(nn.Module):
    """An embedding (counts), a 300-wide input (exact under "auto": its Gram update costs 2.1x the sketch's)
    and a 640-wide one (sketched under "auto": 4.4x)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 300)
        self.up = nn.Linear(300, 640)
        self.down = nn.Linear(640, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.down(torch.relu(self.up(self.embed(input_ids))))


def widening_batches(count: int) -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    return [{"input_ids": torch.randint(0, 50, (4, 10), generator=generator)} for _ in range(count)]


def held_bytes(stats: object) -> int:
    """The bytes of the (d_in)-sized and larger tensors a statistics object holds, directly or in a list (a
    sketch's pending rows); scalars left out."""
    stats = getattr(stats, "local", stats)
    dim = stats.dim  # type: ignore[attr-defined]
    tensors = [v for value in vars(stats).values() for v in (value if isinstance(value, list) else [value])]
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor) and t.numel() >= dim)


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The statistics every fit of the test builds, by measured input (read at the end of the fit)."""
    built: dict[str, object] = {}
    make = StatisticsChooser.make

    def recording(self: StatisticsChooser, name: str, dim: int, device: torch.device) -> object:
        built[name] = make(self, name, dim, device)
        return built[name]

    monkeypatch.setattr(StatisticsChooser, "make", recording)
    return built


KIND = {"GramStatistics": "exact", "SketchStatistics": "sketch", "CountStatistics": "counts"}


@pytest.mark.parametrize(
    ("settings", "kinds"),
    [
        ({}, {"embed": "counts", "up": "exact", "down": "sketch"}),
        ({"statistics": "exact"}, {"embed": "counts", "up": "exact", "down": "exact"}),
        ({"statistics": "sketch"}, {"embed": "counts", "up": "sketch", "down": "sketch"}),
        (
            {"statistics": "exact", "gram_memory_bytes": 8 * 300**2},
            {"embed": "counts", "up": "exact", "down": "sketch"},
        ),
    ],
    ids=["auto", "exact", "sketch", "budget-exhausted"],
)
def test_plan_predicts_the_kinds_and_bytes_a_fit_holds(made, settings, kinds) -> None:
    """The planner's kinds are the fit's, its bytes those the fit's statistics hold at the end (exactly for
    exact statistics and counts, the warm-start basis of the 300-wide input's solver included; an upper bound
    reached within 3x for a sketch, whose pending rows vary)."""
    settings = {**SETTINGS, "target_modules": ["embed", "up", "down"], **settings}
    model = Widening()
    predicted = plan(model, widening_batches(1)[0], **settings)
    fit(model, widening_batches(3), **settings)
    assert predicted.kinds() == kinds == {name: KIND[type(stats).__name__] for name, stats in made.items()}
    for item in predicted.inputs:
        held = held_bytes(made[item.leader])
        if item.kind == "sketch":
            assert item.statistic_bytes / 3 <= held <= item.statistic_bytes, item
        else:
            assert held == item.statistic_bytes, item
    assert [item.rows for item in predicted.inputs] == [40, 40, 40]  # 4 x 10 tokens per batch


def test_plan_groups_shared_inputs_as_the_fit_does(made) -> None:
    """q/k/v share one input: one measured input with three members, as in the fit."""
    predicted = plan(tiny_model(0), token_batches(1)[0], **SETTINGS)
    fit(tiny_model(0), token_batches(3), **SETTINGS)
    assert [item.leader for item in predicted.inputs] == list(made)
    assert predicted.inputs[0].members == ("blocks.0.q", "blocks.0.k", "blocks.0.v")
    assert predicted.layers == 13 and len(predicted.inputs) == 9  # the head too: every nn.Linear


def test_a_meta_model_plans_without_materializing() -> None:
    with torch.device("meta"):
        model = TinyModel()
    predicted = plan(model, token_batches(1)[0], **SETTINGS)
    assert all(parameter.is_meta for parameter in model.parameters())
    assert predicted.forward_flops > 0 and predicted.update_flops > 0
    assert 0 < predicted.overhead < float("inf")
    assert predicted.statistic_bytes < predicted.peak_bytes
    table = predicted.table()
    assert table.splitlines()[0].startswith("| input | layers | d_in |")
    assert "| blocks.0.q | 3 | 16 | 40 | exact |" in table


def test_plan_leaves_a_real_model_as_it_was() -> None:
    """Weights stay where and what they were, the training mode is restored, and the FLOPs are the forward's
    (two blocks of 6 linears, 2 * N * d_in * d_out each, plus attention and the head)."""
    model = tiny_model(0).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    predicted = plan(model, token_batches(1, masked=False)[0], **SETTINGS)
    assert model.training and all(module.training for module in model.modules())
    for name, tensor in model.state_dict().items():
        assert not tensor.is_meta and torch.equal(tensor, before[name]), name
    linears = 2 * 40 * (4 * 16 * 16 + 2 * 16 * 32) * 2 + 2 * 40 * 16 * 64
    assert linears < predicted.forward_flops < 1.5 * linears


def test_a_square_masked_batch_plans() -> None:
    """B == T with a padding mask: the fit checks the mask's symmetry, which a meta mask cannot tell; the plan
    counts the rows unmasked."""
    batch = token_batches(1, size=6, length=6)[0]
    assert [item.rows for item in plan(tiny_model(0), batch, **SETTINGS).inputs] == [36] * 9


class Inspecting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) if bool((x > 0).any()) else x  # reads a value


def test_a_forward_that_reads_values_is_explained() -> None:
    with pytest.raises(MetaDeviceError, match=r"plan: the forward of Inspecting on the meta device failed \("):
        plan(Inspecting(), torch.ones(2, 4), **SETTINGS)


def test_world_size_adds_the_exchange_per_check() -> None:
    alone = plan(tiny_model(0), token_batches(1)[0], **SETTINGS)
    eight = plan(tiny_model(0), token_batches(1)[0], world_size=8, **SETTINGS)
    assert alone.exchange_bytes == 0 and "ranks" not in alone.table()
    q = eight.inputs[0]  # exact, 16 wide: the float64 scatter and sum, then 8 components of 16 + 3 floats back
    assert q.exchange_bytes == 8 * 16 * 16 + 8 * 16 + 16 + 4 * 8 * (16 + 3)
    assert "per check on 8 ranks" in eight.table()


@pytest.mark.parametrize("world_size", [0, -1, 1.5, True, "8"])
def test_bad_world_size_is_refused(world_size) -> None:
    with pytest.raises(InvalidConfigError, match=rf"plan\(world_size={world_size!r}\) is invalid"):
        plan(tiny_model(0), token_batches(1)[0], world_size=world_size)


def test_plan_takes_the_default_budget_from_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """gram_memory_bytes=None: a quarter of the free memory; enough for 1 of the 16-wide Grams here."""
    monkeypatch.setattr(costs, "free_memory", lambda device: 4 * 8 * 16 * 16 + 3)
    predicted = plan(tiny_model(0), token_batches(1)[0], **SETTINGS)
    assert predicted.budget == 8 * 16 * 16
    assert list(predicted.kinds().values()) == ["exact"] + ["sketch"] * 8


# the choice ------------------------------------------------------------------------------------------
def chooser(budget: int = 2**40, **settings: object) -> StatisticsChooser:
    return StatisticsChooser(EvaConfig(rank=16, rho=2.0, **settings), budget)  # type: ignore[arg-type]


def test_auto_is_exact_for_narrow_inputs_and_sketches_wide_ones() -> None:
    """rank 16, rho 2: l = 96; the Gram update (1.5 d^2 from d = 1024) exceeds 4 x 12 l d above d = 3072."""
    choose = chooser()
    assert choose.decide("narrow", 3072).kind == "exact"
    wide = choose.decide("wide", 3073)
    assert wide.kind == "sketch" and "Gram update costs 4.0x the sketch's (> 4x)" in wide.reason
    assert choose.decide("7b", 4096).kind == "sketch"
    assert chooser(statistics="exact").decide("7b", 4096).kind == "exact"
    assert chooser(statistics="sketch").decide("tiny", 8).kind == "sketch"


def test_an_exhausted_budget_sketches_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    choose = chooser(budget=8 * 100 * 100 + 8 * 50 * 50, statistics="exact")
    with caplog.at_level("INFO", logger="eva_core.fitting.costs"):
        kinds = [choose.decide(name, dim).kind for name, dim in (("a", 100), ("b", 200), ("c", 50), ("d", 1))]
    assert kinds == ["exact", "sketch", "exact", "sketch"]
    assert choose.left == 0
    assert (
        "layer 'b' (d_in=200) is measured with a streaming sketch: its Gram (312.5 KiB) exceeds the 19.5 KiB left"
        in (caplog.text)
    )


def test_embeddings_are_counted_whatever_the_setting() -> None:
    for statistics in ("auto", "exact", "sketch"):
        choose = StatisticsChooser(EvaConfig(statistics=statistics), 0, counted={"embed"})  # type: ignore[arg-type]
        assert choose.decide("embed", 50_000).kind == "counts"


@given(st.integers(1, 20_000), st.integers(1, 20_000), st.integers(1, 64), st.sampled_from([1.0, 2.0, 3.0]))
def test_auto_never_keeps_a_wider_gram_than_a_narrower_one(a: int, b: int, rank: int, rho: float) -> None:
    """Cost and memory both grow with d_in: if "auto" keeps d exact, it keeps every narrower input exact, and
    "exact" keeps it too (with the same budget)."""
    narrow, wide = sorted((a, b))
    config = EvaConfig(rank=rank, rho=rho)
    budget = 8 * wide * wide
    if StatisticsChooser(config, budget).decide("x", wide).kind == "exact":
        assert StatisticsChooser(config, budget).decide("x", narrow).kind == "exact"
        assert StatisticsChooser(config.replace(statistics="exact"), budget).decide("x", wide).kind == "exact"
    ratio = costs.update_flops("exact", wide, config.max_components) / costs.update_flops(
        "sketch", wide, config.max_components
    )
    assert (StatisticsChooser(config, budget).decide("x", wide).kind == "exact") == (ratio <= EXACT_COST_FACTOR)


# the default budget -----------------------------------------------------------------------------------
def test_default_budget_is_a_quarter_of_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(costs, "free_memory", lambda device: 1000 * 2**20)
    assert gram_budget(EvaConfig(), torch.device("cpu")) == 250 * 2**20
    assert gram_budget(EvaConfig(gram_memory_bytes=123), torch.device("cpu")) == 123
    monkeypatch.setattr(costs, "free_memory", lambda device: None)
    assert gram_budget(EvaConfig(), None) == costs.FALLBACK_BUDGET


def test_distributed_ranks_take_the_smallest_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    class Ranks:
        size = 3

        def gather(self, value: int) -> list[int]:
            return [value * 2, value, value * 3]

    monkeypatch.setattr(costs, "free_memory", lambda device: 4000)
    assert gram_budget(EvaConfig(), torch.device("cpu"), Ranks()) == 1000  # type: ignore[arg-type]


def test_free_memory_reads_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (123, 456))
    assert costs.free_memory(torch.device("cuda", 0)) == 123
    free = costs.free_memory(torch.device("cpu"))
    assert free is None or free > 0
    monkeypatch.setattr(costs.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert costs.free_memory(torch.device("cpu")) is None
    assert costs.free_memory(torch.device("meta")) is None


def test_a_fit_uses_the_default_budget(monkeypatch: pytest.MonkeyPatch, made) -> None:
    monkeypatch.setattr(costs, "free_memory", lambda device: 4 * 8 * 16 * 16)
    fit(tiny_model(0), token_batches(3), **SETTINGS)
    assert [type(stats).__name__ for stats in made.values()] == ["GramStatistics"] + ["SketchStatistics"] * 8


@pytest.mark.parametrize("value", ["fast", None, 1, ""])
def test_bad_statistics_setting_is_refused(value) -> None:
    with pytest.raises(InvalidConfigError, match=rf"EvaConfig.statistics={value!r} is invalid: expected 'auto'"):
        EvaConfig(statistics=value)  # type: ignore[arg-type]


# eva-lora plan ----------------------------------------------------------------------------------------
class ToyDomain:
    """A domain whose ``eva-lora plan`` hook builds the tiny model on the meta device."""

    @hookimpl
    def eva_claims_model(self, model: nn.Module) -> bool:
        return isinstance(model, TinyModel)

    @hookimpl
    def eva_cli_example(self, model: str, batch_size: int, length: int, options: Mapping[str, str]) -> object:
        if model != "toy":
            return None
        with torch.device("meta"):
            built = TinyModel()
        return built, {"input_ids": torch.zeros(batch_size, length, dtype=torch.long)}


@pytest.fixture
def toy_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """``eva-lora`` in this process, with the toy domain installed."""

    def manager() -> PluginManager:
        plugins = plugin_manager()
        plugins.register(ToyDomain(), "toy")
        return plugins

    monkeypatch.setattr(domains, "plugin_manager", manager)


def test_eva_lora_plan_prints_the_table(toy_cli, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["plan", "toy", "--batch-size", "2", "--seq-len", "5", "--rank", "2", "--world-size", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("EVA plan of toy (domain toy) on batches of 2 x 5:\n| input | layers | d_in |")
    assert "| blocks.0.q | 3 | 16 | 10 | exact |" in out
    assert "domain toy, rank 2, rho 2.0, statistics='auto'" in out and "per check on 8 ranks" in out


def test_eva_lora_plan_passes_its_settings(toy_cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "toy", "--statistics", "exact", "--gram-memory", "2KiB", "--targets", "blocks.0.(q|up)"]) == 0
    out = capsys.readouterr().out
    assert "| blocks.0.q | 1 | 16 | 8192 | exact |" in out and "| blocks.0.up | 1 | 16 | 8192 | sketch |" in out
    assert "statistics='exact', exact budget 2.0 KiB" in out


def test_eva_lora_plan_of_a_model_no_domain_builds(toy_cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "other"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(
        "eva-lora: error: MODEL='other': no eva domain builds it without weights for `eva-lora plan`"
    )
    assert "(tried: toy)" in error


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--gram-memory", "4XB"], "argument --gram-memory: '4XB' is invalid; expected a size such as 4GiB"),
        (["--statistics", "fast"], "argument --statistics: invalid choice: 'fast'"),
        (["--world-size", "0"], "argument --world-size: '0' is invalid; expected an integer in [1, "),
        (["--seq-len", "x"], "argument --seq-len: 'x' is invalid"),
    ],
)
def test_eva_lora_plan_refuses_bad_arguments(arguments, message, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "toy", *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@given(st.integers(0, 2**40), st.sampled_from(["", "B", "KiB", "MiB", "GiB", "kb", "GB"]))
def test_gram_memory_sizes_parse(number: int, unit: str) -> None:
    factor = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kb": 10**3, "GB": 10**9}[unit]
    assert build_parser().parse_args(["plan", "m", "--gram-memory", f"{number}{unit}"]).gram_memory == number * factor


def test_plan_is_public() -> None:
    import eva_core

    assert eva_core.plan is plan and eva_core.Plan is Plan
