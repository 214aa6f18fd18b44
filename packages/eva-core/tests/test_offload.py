"""Offloaded and dispatched models (accelerate): the hooks see each layer's real input wherever its weights
live (meta tensors moved in by accelerate's hooks, weights kept on disk), so the fit equals the plain one."""

from __future__ import annotations

import pytest
import torch

from eva_core import EvaState, fit

accelerate = pytest.importorskip("accelerate")

SETTINGS = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": 6, "max_steps": 6, "progress": False}


def assert_same_state(state: EvaState, reference: EvaState) -> None:
    assert state.ranks == reference.ranks
    for name, ref in reference.layers.items():
        layer = state.layers[name]
        assert (layer.rows, layer.source) == (ref.rows, ref.source), name
        torch.testing.assert_close(layer.components, ref.components, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.explained_variance, ref.explained_variance, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def reference() -> EvaState:
    from conftest import tiny_model, token_batches

    return fit(tiny_model(0), token_batches(6), **SETTINGS)


def test_cpu_offloaded_model(reference, make_model, batches) -> None:
    """Every weight sits on the meta device between calls; accelerate's hooks bring it in per layer."""
    model = accelerate.cpu_offload(make_model(0), execution_device=torch.device("cpu"))
    assert model.blocks[0].q.weight.device.type == "meta"
    assert_same_state(fit(model, batches, **SETTINGS), reference)


def test_dispatched_model_with_a_block_on_disk(tmp_path, reference, make_model, batches) -> None:
    """A device map keeps block 1 on disk (meta tensors in the module, weights memory-mapped from files)."""
    device_map = {"": "cpu", "blocks.1": "disk"}
    model = make_model(0)
    model = accelerate.dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(tmp_path))
    assert model.blocks[1].up.weight.device.type == "meta"
    assert model.blocks[0].up.weight.device.type == "cpu"
    assert_same_state(fit(model, batches, **SETTINGS), reference)
