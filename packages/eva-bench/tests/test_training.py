"""``train`` and ``RunRecord``: the loop every recipe shares."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from torch import nn

from eva_bench import EvalPoint, RunRecord, train
from eva_bench.training import score
from eva_core.errors import EmptyDataError, InvalidConfigError


def _regression() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(0)
    true = torch.randn(4, 1, generator=generator)
    data = []
    for _ in range(4):
        x = torch.randn(32, 4, generator=generator)
        data.append((x, x @ true))
    torch.manual_seed(0)
    return nn.Linear(4, 1), data


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_train_lowers_the_loss_and_evaluates_where_asked() -> None:
    model, data = _regression()
    held_out = data[-1]
    modes = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        modes.append(m.training)
        return {"mse": _loss(m, held_out).item()}

    curve = train(model, itertools.cycle(data[:3]), _loss, evaluate, steps=60, eval_at=[0, 30, 60], lr=0.1)
    assert [point.step for point in curve] == [0, 30, 60]
    assert curve[-1].metrics["mse"] < 0.1 * curve[0].metrics["mse"]
    assert modes == [False, False, False]


def test_a_list_is_read_epoch_after_epoch() -> None:
    model, data = _regression()
    seen = []

    def loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        seen.append(batch)
        return _loss(m, batch)

    train(model, data[:2], loss, lambda m: {}, steps=5, eval_at=[], lr=0.1)
    expected = [data[i] for i in (0, 1, 0, 1, 0)]
    assert len(seen) == len(expected)
    for batch, want in zip(seen, expected, strict=True):  # accelerate hands over device copies of the batches
        assert all(torch.equal(got, wanted) for got, wanted in zip(batch, want, strict=True))


def test_several_processes_each_read_their_share_of_the_batches() -> None:
    from eva_bench.training import _shard

    stream = iter(range(10))
    assert list(_shard(iter(range(10)), 0, 1)) == list(range(10))
    assert list(_shard(stream, 1, 3)) == [1, 4, 7]


def test_a_spent_iterator_is_a_clear_error() -> None:
    model, data = _regression()
    with pytest.raises(EmptyDataError, match="one-shot iterator"):
        train(model, iter(data[:2]), _loss, lambda m: {}, steps=3, eval_at=[], lr=0.1)


def test_only_trainable_parameters_move() -> None:
    model, data = _regression()
    model.bias.requires_grad_(False)
    bias = model.bias.detach().clone()
    train(model, itertools.cycle(data), _loss, lambda m: {}, steps=5, eval_at=[], lr=0.1)
    assert torch.equal(model.bias, bias)


@pytest.mark.parametrize("eval_at", [[-1], [11]])
def test_evaluation_steps_must_lie_in_the_run(eval_at: list[int]) -> None:
    model, data = _regression()
    with pytest.raises(InvalidConfigError, match="eval_at"):
        train(model, iter(data), _loss, lambda m: {}, steps=10, eval_at=eval_at, lr=0.1)


def test_a_frozen_model_is_refused() -> None:
    model, data = _regression()
    model.requires_grad_(False)
    with pytest.raises(InvalidConfigError, match="requires_grad"):
        train(model, iter(data), _loss, lambda m: {}, steps=1, eval_at=[], lr=0.1)


def test_a_diverging_loss_stops_the_run() -> None:
    model, data = _regression()
    bad = [(x * float("nan"), y) for x, y in data]
    with pytest.raises(FloatingPointError, match="learning rate"):
        train(model, iter(bad), _loss, lambda m: {}, steps=2, eval_at=[], lr=0.1)


def test_record_round_trips_through_json() -> None:
    record = RunRecord(
        method="eva",
        seed=1,
        metric="accuracy",
        init_seconds=1.5,
        train_seconds=9.0,
        trainable_parameters=123,
        curve=(EvalPoint(0, {"accuracy": 0.5, "loss": 0.7}), EvalPoint(10, {"accuracy": 0.8, "loss": 0.4})),
        extra={"ranks": {"a": 2}},
    )
    assert record.final() == 0.8 and record.final("loss") == 0.4
    data = json.loads(json.dumps(record.to_json()))
    assert data["curve"][1] == {"step": 10, "metrics": {"accuracy": 0.8, "loss": 0.4}}
    assert data["extra"]["ranks"] == {"a": 2}


def test_record_of_a_run_counts_trainable_parameters_and_keeps_the_eva_summary() -> None:
    from eva_bench import EvalPoint, RunRecord, eva_summary, initialize

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    batches = [torch.randn(16, 8) * torch.logspace(0, -2, 8) for _ in range(4)]
    peft_model = initialize(
        model, "eva", batches, rank=2, target_modules=["0"], eva_overrides={"tau": 0.0, "progress": False}
    )
    curve = (EvalPoint(0, {"loss": 1.0}),)
    record = RunRecord.of(
        peft_model, method="eva", seed=0, metric="loss", init_seconds=1.0, train_seconds=2.0, curve=curve,
        extra={"lr": 1e-3},
    )  # fmt: skip
    assert record.trainable_parameters == peft_model.get_nb_trainable_parameters()[0] == 2 * 8 + 8 * 2
    assert record.extra["lr"] == 1e-3 and record.extra["ranks"] == {"0": 2}
    assert record.extra["eva_batches"] == peft_model.eva_state.steps
    assert eva_summary(model=nn.Linear(2, 2)) == {}


def test_shuffled_epochs_visit_every_batch_once_per_epoch_in_a_seeded_order() -> None:
    from itertools import islice

    from eva_bench import shuffled_epochs

    first, second = (
        list(islice(shuffled_epochs(list(range(5)), seed=3), 10)),
        list(islice(shuffled_epochs(list(range(5)), seed=3), 10)),
    )
    assert first == second
    assert sorted(first[:5]) == sorted(first[5:]) == list(range(5))
    assert first[:5] != first[5:]  # each epoch draws a new order


def _dora_model() -> nn.Module:
    """Two linears with DoRA adapters whose B is nonzero, so the weight norm depends on the adapter."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["0", "2"], use_dora=True))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter)
    return model


def test_scoring_a_dora_model_gives_the_uncached_numbers_before_and_after_its_weights_move() -> None:
    """score() lets DoRA layers cache their weight norm within a call: the outputs must equal a plain eval-mode
    forward bit for bit, and after the adapter's weights move (here in place, the model never leaving eval mode)
    the next call must not reuse the norm of the old weights."""
    model, x = _dora_model(), torch.randn(5, 8, generator=torch.Generator().manual_seed(1))

    def uncached() -> list[float]:  # on a copy: a forward without caching clears the model's cache
        reference = copy.deepcopy(model).eval()
        with torch.no_grad():
            return reference(x).flatten().tolist()

    def outputs(m: nn.Module) -> dict[str, float]:
        first, again = m(x), m(x)  # the second forward reads the cache
        assert torch.equal(first, again)
        return {str(i): float(v) for i, v in enumerate(first.flatten())}

    before = score(model, outputs)
    assert list(before.values()) == uncached()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name:
                parameter.mul_(3.0)
    after = score(model, outputs)
    assert after != before and list(after.values()) == uncached()
