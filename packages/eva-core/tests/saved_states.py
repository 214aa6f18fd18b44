"""What the EvaState file tests share: the tensor fields of a spectrum and the check that two states are
identical (same ranks in the same order, config, extra, and bit-equal tensors of the same dtype)."""

from __future__ import annotations

import torch

from eva_core import EvaState

SPECTRUM_FIELDS = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


def assert_identical(a: EvaState, b: EvaState) -> None:
    assert (list(a.ranks.items()), a.steps, a.config, a.seconds, a.extra) == (
        list(b.ranks.items()),
        b.steps,
        b.config,
        b.seconds,
        b.extra,
    )
    assert list(a.layers) == list(b.layers)
    for name, layer in a.layers.items():
        other = b.layers[name]
        for key in SPECTRUM_FIELDS:
            x, y = getattr(layer, key), getattr(other, key)
            assert x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y), (name, key)
        assert (layer.rows, layer.converged, layer.converged_at, layer.source) == (
            other.rows,
            other.converged,
            other.converged_at,
            other.source,
        )
