"""Every call of every targeted layer is measured, also when a layer shares another's input and then runs
again, and masks reach sequence-first inputs the right way round."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from eva_core import fit
from eva_core.errors import EmptyDataError, EvaWarning

SETTINGS = {"tau": 0.0, "progress": False, "rank": 2, "rho": 2}


def inputs_seen(model: nn.Module, batches: list[torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Every input row (N, d) each named layer received over ``batches``, recorded by plain hooks."""
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(args[0].reshape(-1, 8)))
        for name in names
    ]
    with torch.no_grad():
        for batch in batches:
            model(batch)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(rows) for name, rows in seen.items()}


def assert_exact(layer, rows: torch.Tensor, k: int = 4) -> None:
    x = rows.double() - rows.double().mean(dim=0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    assert layer.rows == rows.shape[0]
    cosine = (layer.components[:k].double() * vh[:k]).sum(dim=1).abs()
    assert cosine.min().item() >= 0.9999, cosine
    torch.testing.assert_close(layer.singular_values[:k].double(), s[:k], rtol=1e-4, atol=0)


class FollowerRunsAgain(nn.Module):
    """``b`` shares ``a``'s input, then runs again on ``a``'s output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(x) + self.b(torch.tanh(h))


class LeaderRunsAgain(nn.Module):
    """``b`` shares ``a``'s input; ``a`` runs again on ``b``'s output, ``b`` does not."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.a(x)
        return self.a(torch.tanh(self.b(x)))


def spread_batches(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 8, generator=generator) * torch.logspace(0.5, -1, 8) for _ in range(count)]


@pytest.mark.filterwarnings("ignore::eva_core.errors.NotConvergedWarning")  # one batch cannot converge
@pytest.mark.parametrize("model_type", [FollowerRunsAgain, LeaderRunsAgain])
@pytest.mark.parametrize("count", [1, 3])
def test_every_call_is_measured_when_a_layer_shares_an_input_and_runs_again(model_type, count: int) -> None:
    """With one batch the later calls used to be silently dropped; with more, an InconsistentSharedInputError
    blamed the model. Each layer's spectrum is the exact SVD of the rows of all its calls."""
    torch.manual_seed(0)
    model = model_type()
    batches = spread_batches(count)
    state = fit(model, batches, min_steps=count, max_steps=count, **SETTINGS)
    seen = inputs_seen(model, batches, ["a", "b"])
    for name in ("a", "b"):
        assert state.layers[name].source == name
        assert_exact(state.layers[name], seen[name])


class SharedOnce(nn.Module):
    """``a`` and ``b`` share one input and each runs once: they stay one group (measured once)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.tanh(self.a(x) + self.b(x)))


def test_layers_sharing_an_input_once_per_forward_stay_grouped() -> None:
    model = SharedOnce()
    batches = spread_batches(3)
    state = fit(model, batches, min_steps=3, max_steps=3, **SETTINGS)
    assert state.layers["b"].source == "a"
    assert_exact(state.layers["b"], inputs_seen(model, batches, ["b"])["b"])


class SequenceFirst(nn.Module):
    """Embeds (B, T) ids, then ``proj`` sees the sequence-first (T, B, 8) tensor (as nn.Transformer
    layers with batch_first=False do); ``head`` sees it batch-first again."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        with torch.no_grad():
            self.embed.weight.mul_(torch.logspace(0.5, -1, 8))
        self.proj, self.head = nn.Linear(8, 8), nn.Linear(8, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids).transpose(0, 1)  # (T, B, 8)
        return self.head(torch.tanh(self.proj(x)).transpose(0, 1))  # (B, T, 8)


def padded_batch(size: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    """Right-padded ids with lengths 1..T: the (B, T) mask is not symmetric."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (size, length), generator=generator)
    lengths = torch.randint(1, length + 1, (size,), generator=generator)
    lengths[0] = 1
    return {"input_ids": ids, "attention_mask": (torch.arange(length)[None, :] < lengths[:, None]).long()}


def rows_by_hand(model: SequenceFirst, batches: list[dict]) -> dict[str, torch.Tensor]:
    """The unpadded rows of ``proj`` (read from its (T, B, d) input at [t, b] where mask[b, t]) and ``head``."""
    kept: dict[str, list[torch.Tensor]] = {"proj": [], "head": []}
    with torch.no_grad():
        for batch in batches:
            mask = batch["attention_mask"].bool()  # (B, T)
            x = model.embed(batch["input_ids"]).transpose(0, 1)  # (T, B, d)
            kept["proj"].append(x.transpose(0, 1)[mask])
            kept["head"].append(torch.tanh(model.proj(x)).transpose(0, 1)[mask])
    return {name: torch.cat(rows) for name, rows in kept.items()}


def test_sequence_first_input_with_batch_equal_to_length_gets_the_mask_right() -> None:
    """The first batch (B=6, T=9) shows ``proj``'s layout; later B == T == 7 batches used to get the mask
    applied transposed (matched by shape alone). Rows must be those selected by hand."""
    torch.manual_seed(0)
    model = SequenceFirst()
    batches = [padded_batch(6, 9, seed=0)] + [padded_batch(7, 7, seed=i) for i in range(1, 4)]
    state = fit(model, batches, min_steps=4, max_steps=4, **SETTINGS)
    for name, rows in rows_by_hand(model, batches).items():
        assert_exact(state.layers[name], rows)


def test_batch_equal_to_length_before_the_layout_is_known_is_left_out() -> None:
    """A first B == T == 7 batch with an asymmetric mask cannot show ``proj``'s layout: it adds no row to
    the layers whose layout is unknown (guessing batch-first measured the padding; refusing failed
    batch-first models whose first batch is square), and the next batch (B=6, T=9) is measured right."""
    torch.manual_seed(0)
    model = SequenceFirst()
    batches = [padded_batch(7, 7, seed=1), padded_batch(6, 9, seed=0)]
    state = fit(model, batches, min_steps=2, max_steps=2, **SETTINGS)
    for name, rows in rows_by_hand(model, batches[1:]).items():
        assert_exact(state.layers[name], rows)


def test_only_square_padded_batches_say_why_no_row_was_measured() -> None:
    """When no batch can show the layout, the error (every layer without rows) or the warning (some layers
    measured, here the embedding, whose (B, T) ids need no layout) says so rather than blaming the masks."""
    batches = [padded_batch(7, 7, seed=i) for i in range(3)]
    with pytest.raises(EmptyDataError, match=r"\(B, T, d\) or \(T, B, d\) could not be told"):
        fit(SequenceFirst(), batches, min_steps=3, max_steps=3, target_modules=["proj", "head"], **SETTINGS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = fit(SequenceFirst(), batches, min_steps=3, max_steps=3, target_modules=["embed", "proj", "head"],
                    **SETTINGS)  # fmt: skip
    said = [str(w.message) for w in caught if issubclass(w.category, EvaWarning)]
    assert any("Layers ['head', 'proj'] never saw a batch whose size differs" in message for message in said), said
    assert state.ranks["embed"] > 0 and state.ranks["proj"] == state.ranks["head"] == 0


def test_batch_equal_to_length_with_a_symmetric_mask_needs_no_layout() -> None:
    """Without padding (no mask) or with a symmetric one, either layout selects the same rows."""
    torch.manual_seed(0)
    model = SequenceFirst()
    full = {"input_ids": padded_batch(7, 7, seed=2)["input_ids"], "attention_mask": torch.ones(7, 7, dtype=torch.long)}
    batches = [full, padded_batch(6, 9, seed=0)]
    state = fit(model, batches, min_steps=2, max_steps=2, **SETTINGS)
    for name, rows in rows_by_hand(model, batches).items():
        assert_exact(state.layers[name], rows)
