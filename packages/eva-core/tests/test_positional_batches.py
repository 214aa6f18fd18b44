"""Tuple batches are passed positionally (``model(*batch)``). When that is why the model fails, as with a
``TensorDataset`` of ``(input_ids, attention_mask, labels)`` whose labels land in BERT's third parameter
``token_type_ids``, ``fit`` says so beside the model's own error."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from eva_core import EvaWarning, fit

SETTINGS = {"rank": 2, "tau": 0.0, "max_steps": 2, "min_steps": 2, "target_modules": ["proj"]}


class Encoder(nn.Module):
    """A BERT-shaped signature: ``(input_ids, attention_mask=None, token_type_ids=None)``; ids: (B, T)."""

    def __init__(self) -> None:
        super().__init__()
        self.words, self.types, self.proj = nn.Embedding(32, 8), nn.Embedding(2, 8), nn.Linear(8, 8)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden = self.words(input_ids)  # (B, T, 8)
        if token_type_ids is not None:
            hidden = hidden + self.types(token_type_ids).view(hidden.shape)  # labels (B,) do not reshape
        return self.proj(hidden)


def dataset() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32, (16, 6), generator=generator)
    return TensorDataset(ids, torch.ones_like(ids), torch.randint(0, 2, (16,), generator=generator))


def test_a_tuple_whose_labels_fill_a_model_parameter_fails_with_a_hint() -> None:
    hint = r"list of 3 items.*positionally.*token_type_ids.*Yield dicts"
    with pytest.warns(EvaWarning, match=hint), pytest.raises(RuntimeError, match="shape"):  # the model's own error
        fit(Encoder(), DataLoader(dataset(), batch_size=8), **SETTINGS)


def test_dict_batches_of_the_same_data_fit() -> None:
    def named(rows: list[tuple[torch.Tensor, ...]]) -> dict[str, torch.Tensor]:
        ids, mask, _ = (torch.stack(column) for column in zip(*rows, strict=True))
        return {"input_ids": ids, "attention_mask": mask}

    state = fit(Encoder(), DataLoader(dataset(), batch_size=8, collate_fn=named), **SETTINGS)
    assert state.layers["proj"].rows == 2 * 8 * 6


def test_a_failing_dict_batch_gets_no_tuple_hint() -> None:
    batches = [{"input_ids": torch.zeros(8, 6, dtype=torch.long), "token_type_ids": torch.zeros(8, dtype=torch.long)}]
    with pytest.raises(RuntimeError, match="shape"):  # filterwarnings=error: any warning would fail this
        fit(Encoder(), batches, **SETTINGS)


def test_a_tuple_that_fits_the_signature_gets_no_hint() -> None:
    ids = torch.randint(0, 32, (8, 6), generator=torch.Generator().manual_seed(1))
    state = fit(Encoder(), [(ids, torch.ones_like(ids))] * 2, **SETTINGS)
    assert state.layers["proj"].rows == 2 * 8 * 6
