"""What fit() raises and warns on bad input, and what the messages tell the user."""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from collections import OrderedDict

import pytest
import torch
from torch import nn

from eva_core import EvaError, EvaWarning, fit
from eva_core.errors import (
    EmptyDataError,
    InconsistentSharedInputError,
    MissingExtraError,
    NonFiniteActivationError,
    NoTargetLayersError,
    TooFewRowsWarning,
    UnsupportedBatchError,
    UnsupportedLayerError,
)

QUICK = {"tau": 0.0, "min_steps": 2, "max_steps": 2, "progress": False}


def mlp(d_in: int = 4, width: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width))


def rows(count: int, n: int = 32, d_in: int = 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, d_in, generator=generator) for _ in range(count)]


@pytest.mark.parametrize("empty", [[], (), iter([])])
def test_empty_iterable(empty) -> None:
    with pytest.raises(EmptyDataError, match=r"fit\(batches=\.\.\.\) yielded no batch; pass a non-empty iterable"):
        fit(mlp(), empty, rank=2, **QUICK)


def test_empty_generator(model) -> None:
    def nothing():
        yield from ()

    with pytest.raises(EmptyDataError) as info:
        fit(model, nothing(), rank=2, **QUICK)
    assert isinstance(info.value, ValueError) and isinstance(info.value, EvaError)


def test_no_target_layers(model, batches) -> None:
    with pytest.raises(NoTargetLayersError) as info:
        fit(model, batches, target_modules=["nope"], rank=2, **QUICK)
    message = str(info.value)
    assert "target_modules=('nope',) matches no module of TinyModel" in message
    assert "'blocks.0.q'" in message  # lists linear layers that exist
    assert "named_modules()" in message  # the fix


def test_no_target_layers_regex_and_no_linear() -> None:
    with pytest.raises(NoTargetLayersError, match=r"target_modules='nope\.\*' matches no module"):
        fit(mlp(), rows(2), target_modules="nope.*", rank=2, **QUICK)
    with pytest.raises(NoTargetLayersError, match="finds no layer to adapt in Sequential; pass target_modules"):
        fit(nn.Sequential(nn.ReLU()), rows(2), rank=2, **QUICK)


@pytest.mark.parametrize("batch", [{1, 2}, object(), 3.5, "text"])
def test_unsupported_batch_type(batch) -> None:
    with pytest.raises(UnsupportedBatchError) as info:
        fit(mlp(), [batch], rank=2, **QUICK)
    message = str(info.value)
    assert f"batches yielded a {type(batch).__name__}, which no eva plugin" in message
    assert "yield a dict of tensors" in message  # the fix
    assert isinstance(info.value, TypeError)


def test_target_without_rows_function() -> None:
    with pytest.raises(UnsupportedLayerError, match="target_modules selects '1', a ReLU"):
        fit(mlp(), rows(2), target_modules=["1"], rank=2, **QUICK)


def hash_order_against_model_order() -> tuple[str, str]:
    """Two layer names ``(first, second)`` that a set built by adding first, then second, iterates in the
    opposite order in this interpreter (string hashes are salted per process)."""
    names = [f"layer{i}" for i in range(50)]
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            added = {first}
            added.add(second)
            if list(set(added)) == [second, first]:
                return first, second
    raise AssertionError("no pair of names iterates out of insertion order")


def test_nan_input_names_the_first_layer_it_reaches() -> None:
    """NaN fed to the first layer reaches the second as well; the error names the first one, in model
    order, whatever order a set of names iterates in."""
    first, second = hash_order_against_model_order()
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([(first, nn.Linear(4, 8)), ("act", nn.ReLU()), (second, nn.Linear(8, 8))]))
    batches = rows(2)
    batches[0][3, 1] = float("nan")
    with pytest.raises(NonFiniteActivationError) as info:
        fit(model, batches, rank=2, **QUICK)
    message = str(info.value)
    assert f"layer {first!r} received NaN or infinite inputs by batch 1" in message
    assert "target_modules" in message  # one of the fixes offered


class Overflow(nn.Module):
    """Passes its input through on the first call, then overflows to infinity."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x if self.calls == 1 else x * float("inf")


def test_infinity_in_a_later_layer_names_that_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), Overflow(), nn.Linear(8, 8))
    with pytest.raises(NonFiniteActivationError, match="layer '2' received NaN or infinite inputs by batch 2"):
        fit(model, rows(3), rank=2, tau=1.0, max_steps=3, progress=False)


def test_rank_above_d_in_warns_and_caps() -> None:
    with pytest.warns(EvaWarning) as record:
        state = fit(mlp(d_in=4, width=8), rows(2), rank=3, rho=2.0, **QUICK)
    messages = [str(w.message) for w in record if w.category is EvaWarning]
    assert messages == [
        "layer '0' has d_in=4 < round(rho*rank)=6; it can take at most 4 ranks. Lower rank or rho, or leave it "
        "out of target_modules."
    ]
    assert state.layers["0"].components.shape == (4, 4)
    assert state.ranks["0"] <= 4
    assert sum(state.ranks.values()) == 3 * 2


def test_too_few_rows_warns_and_caps() -> None:
    tiny = rows(2, n=2, d_in=8)  # 4 rows in all, 3 usable once centered; 6 components asked
    with pytest.warns(TooFewRowsWarning) as record:
        state = fit(mlp(d_in=8, width=8), tiny, rank=6, rho=1.0, **QUICK)
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert messages[0] == (
        "layer '0' saw 4 rows (one goes to centering), so it has 3 components where 6 were asked for; it can "
        "take at most 3 ranks. Feed more or longer batches, or check the masks."
    )
    assert messages[1].startswith("layer '2' saw 4 rows")
    assert state.layers["0"].components.shape == (3, 8)
    assert state.ranks == {"0": 3, "2": 3}


def test_too_few_rows_message_is_consistent_when_centering_costs_the_row() -> None:
    """4 rows and 4 components: centering leaves 3 usable; the message must not read '4 rows, fewer than 4'."""
    with pytest.warns(TooFewRowsWarning) as record:
        fit(mlp(d_in=8, width=8), rows(2, n=2, d_in=8), rank=4, rho=1.0, **QUICK)
    message = str(record[0].message)
    usable, asked = map(int, re.search(r"so it has (\d+) components where (\d+) were asked", message).groups())
    assert usable < asked, message


def test_warnings_point_at_the_caller() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(mlp(d_in=4, width=8), rows(2, n=2), rank=6, rho=1.0, tau=1.0, max_steps=2, progress=False)
    assert {w.category.__name__ for w in caught} >= {"EvaWarning", "TooFewRowsWarning", "NotConvergedWarning"}
    assert [(w.category.__name__, w.filename) for w in caught if w.filename != __file__] == []


def test_all_rows_masked_raises_empty_data_without_row_warnings(model, make_batches) -> None:
    batches = make_batches(3)
    for batch in batches:
        batch["attention_mask"].zero_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(EmptyDataError) as info:
            fit(model, batches, rank=2, tau=1.0, max_steps=3, progress=False)
    assert "every row was masked out (attention_mask 0 or labels -100 everywhere)" in str(info.value)
    assert "check the batches' masks" in str(info.value)
    # the error says it all: one "saw only 0 rows" warning per layer before it is noise (and with
    # -W error the first of them hides the EmptyDataError)
    assert [str(w.message) for w in caught if issubclass(w.category, EvaWarning)] == []


def test_all_labels_ignored_raises_empty_data(model, make_batches) -> None:
    batches = make_batches(2)
    for batch in batches:
        batch["labels"].fill_(-100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TooFewRowsWarning)
        with pytest.raises(EmptyDataError, match="every row was masked out"):
            fit(model, batches, rank=2, tau=1.0, max_steps=2, progress=False)


class SharedThenNot(nn.Module):
    """q and k get one tensor on the first call and different ones later; ``out`` optionally runs after."""

    def __init__(self, trailing: bool) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 4)
        self.out = nn.Linear(4, 4) if trailing else None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = x * 1.0
        y = self.q(h) + self.k(h if self.calls == 1 else h.clone())
        return y if self.out is None else self.out(y)


@pytest.mark.parametrize(("trailing", "stop_early"), [(True, True), (False, False), (False, True)])
def test_inconsistent_shared_input(trailing: bool, stop_early: bool) -> None:
    """Detected whether or not a layer runs after the group, and with or without the early stop (with the
    early stop and no later layer, StopForward must not skip the follower's check)."""
    torch.manual_seed(0)
    with pytest.raises(InconsistentSharedInputError) as info:
        fit(
            SharedThenNot(trailing),
            rows(3),
            rank=2,
            tau=1.0,
            max_steps=3,
            stop_forward_early=stop_early,
            progress=False,
        )
    message = str(info.value)
    assert "layers 'q' and 'k' received the same input tensor on the first batch but different ones later" in message
    assert "share_identical_inputs=False" in message


def test_inconsistent_shared_input_measured_separately_when_asked() -> None:
    state = fit(SharedThenNot(True), rows(3), rank=2, share_identical_inputs=False, **QUICK)
    assert {name: layer.source for name, layer in state.layers.items()} == {"q": "q", "k": "k", "out": "out"}


def test_peft_model_is_measured_as_the_plain_model(make_model, batches) -> None:
    """As peft's EVA: a model carrying adapters is measured with them disabled, under the plain names
    (test_transactions.py checks the spectra against the plain model's)."""
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(make_model(0), LoraConfig(r=2, target_modules=["q"]))
    state = fit(wrapped, batches, rank=2, target_modules=["q", "k"], tau=0.0, min_steps=2, max_steps=2, progress=False)
    assert set(state.ranks) == {"blocks.0.q", "blocks.0.k", "blocks.1.q", "blocks.1.k"}


def test_the_contract_tests_without_pytest_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """``eva_core.testing`` needs pytest, which only the ``testing`` extra installs: importing it without pytest
    says which extra to install."""
    monkeypatch.delitem(sys.modules, "eva_core.testing", raising=False)
    monkeypatch.setitem(sys.modules, "pytest", None)  # `import pytest` now raises ImportError
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'eva-core[testing]'")):
        importlib.import_module("eva_core.testing")
