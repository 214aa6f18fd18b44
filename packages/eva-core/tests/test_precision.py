"""Half-precision models: statistics are computed in float32 (summed in float64) whatever the model's dtype."""

from __future__ import annotations

import torch

from eva_core import fit
from eva_core.svd import GramStatistics


def test_bfloat16_model_accumulates_in_float32(make_model, make_batches) -> None:
    batches = make_batches(4)
    settings = {"rank": 2, "tau": 0.0, "min_steps": 4, "max_steps": 4, "progress": False}
    reference = fit(make_model(), batches, **settings)
    half = fit(make_model().to(torch.bfloat16), batches, **settings)
    assert half.ranks.keys() == reference.ranks.keys()
    for name, layer in half.layers.items():
        assert layer.components.dtype == torch.float32
        assert layer.rows == reference.layers[name].rows
        # bf16 activations carry ~3 significant digits; the leading direction survives that
        cosine = torch.dot(layer.components[0], reference.layers[name].components[0]).abs()
        assert cosine >= 0.99, (name, float(cosine))


def test_gram_statistics_of_bf16_rows_match_float64() -> None:
    generator = torch.Generator().manual_seed(0)
    rows = (torch.randn(4000, 48, generator=generator) * torch.logspace(1, -1, 48)).to(torch.bfloat16)
    stats = GramStatistics(48, "cpu")
    for chunk in rows.split(500):
        stats.update(chunk)
    assert stats.scatter.dtype == torch.float64  # float32 products, float64 sums
    exact = rows.double() - rows.double().mean(dim=0)
    _, singular_values, vh = torch.linalg.svd(exact, full_matrices=False)
    spectrum = stats.top(4, exact=True)
    torch.testing.assert_close(spectrum.singular_values.double(), singular_values[:4], rtol=1e-5, atol=0)
    assert (spectrum.components.double() * vh[:4]).sum(dim=1).abs().min() >= 0.99999
