"""Batches without a (valid) length: an IterableDataset behind a DataLoader, objects whose ``__len__``
raises or lies. ``fit`` reads them to the end (the progress bar then has no total)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, IterableDataset

from eva_core import fit
from eva_core.fitting.feed import BatchProgress

SETTINGS = {"rank": 2, "tau": 0.0, "max_steps": 4, "min_steps": 4}


class Rows(IterableDataset):
    """64 rows of 8 features, streamed (no ``__len__``)."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        for _ in range(64):
            yield torch.randn(8, generator=generator) * torch.logspace(0, -2, 8)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


@pytest.mark.parametrize("progress", [False, True])
def test_a_dataloader_over_an_iterable_dataset_is_fitted(progress: bool) -> None:
    state = fit(model(), DataLoader(Rows(), batch_size=16), progress=progress, **SETTINGS)
    assert state.steps == 4
    assert {layer.rows for layer in state.layers.values()} == {64}


class Lying:
    """Iterable over ``batches``; ``len()`` raises ``error`` or returns ``length``."""

    def __init__(self, batches: list[torch.Tensor], length: object = None, error: type[Exception] | None = None):
        self.batches, self.length, self.error = batches, length, error

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)

    def __len__(self) -> int:
        if self.error is not None:
            raise self.error("no length")
        return self.length  # type: ignore[return-value]


LENGTHS = st.one_of(
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.just(object())
)


@settings(max_examples=60)
@given(length=LENGTHS, error=st.sampled_from([None, TypeError, NotImplementedError, ValueError, RuntimeError]))
def test_any_length_or_none_gives_a_bar(length: object, error: type[Exception] | None) -> None:
    """Whatever ``len()`` does, the bar reads every batch; a valid length bounds its total."""
    batches = [torch.zeros(2, 8)] * 3
    bar = BatchProgress(iter(batches), Lying(batches, length, error), max_steps=10, start=0, shown=False)
    with bar:
        assert [next(bar) for _ in range(3)] == batches
        with pytest.raises(StopIteration):
            next(bar)
    valid = error is None and isinstance(length, int) and 0 <= length < 2**63
    assert bar.bar.total == (min(10, length) if valid else 10)  # type: ignore[type-var]
