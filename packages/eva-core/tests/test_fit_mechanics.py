"""The mechanics of fit() on a tiny random model: grouping, purity, modes, early stop, masks, steps."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from eva_core import apply, fit
from eva_core.errors import NotConvergedWarning

QKV = ("q", "k", "v")


def test_shared_inputs_are_grouped_under_their_first_layer(model, batches, exact_fit_settings) -> None:
    state = fit(model, batches, **exact_fit_settings)
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    assert list(state.layers) == linear
    for name, layer in state.layers.items():
        block, _, leaf = name.rpartition(".")
        expected = f"{block}.q" if leaf in QKV else name
        assert layer.source == expected, name
    assert state.layers["blocks.0.k"] is state.layers["blocks.0.q"]
    assert state.layers["blocks.1.v"] is state.layers["blocks.1.q"]
    assert state.layers["blocks.1.q"] is not state.layers["blocks.0.q"]


def test_without_sharing_every_layer_is_its_own_source(model, batches, exact_fit_settings) -> None:
    state = fit(model, batches, share_identical_inputs=False, **exact_fit_settings)
    assert all(layer.source == name for name, layer in state.layers.items())
    shared = fit(model, batches, **exact_fit_settings)
    torch.testing.assert_close(state.layers["blocks.0.v"].components, shared.layers["blocks.0.q"].components)


def test_group_source_follows_run_order_not_definition_order(exact_fit_settings, make_batches) -> None:
    """v, k, q are defined in that order but q runs first: q measures the group and is the source."""

    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(64, 16)
            self.v, self.k, self.q = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, input_ids, attention_mask=None):
            x = self.embed(input_ids)
            return self.q(x) + self.k(x) + self.v(x)

    torch.manual_seed(0)
    state = fit(Reordered(), make_batches(6), **exact_fit_settings)
    assert {name: layer.source for name, layer in state.layers.items()} == {"v": "q", "k": "q", "q": "q"}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in itertools.chain(module.named_parameters(), module.named_buffers())}


def test_parameters_and_buffers_untouched_by_fit_and_apply(model, batches, exact_fit_settings) -> None:
    before = snapshot(model)
    originals = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
    state = fit(model, batches, **exact_fit_settings)
    after_fit = snapshot(model)
    assert after_fit.keys() == before.keys()
    assert all(torch.equal(after_fit[name], before[name]) for name in before)
    peft_model = apply(model, state)
    kept = {id(t) for t in itertools.chain(peft_model.parameters(), peft_model.buffers())}
    for name, tensor in originals.items():
        assert id(tensor) in kept, name  # still the model's own tensor, wrapped by peft
        assert torch.equal(tensor, before[name]), name


def test_train_eval_flags_restored_and_eval_during_fit(model, batches, exact_fit_settings) -> None:
    model.train()
    model.blocks[0].eval()
    model.blocks[1].up.eval()
    model.head.eval()
    flags = {name: module.training for name, module in model.named_modules()}
    seen = []
    handle = model.blocks[0].q.register_forward_pre_hook(lambda module, args: seen.append(model.training))
    try:
        fit(model, batches, **exact_fit_settings)
    finally:
        handle.remove()
    assert seen and not any(seen)  # the model ran in eval mode
    assert {name: module.training for name, module in model.named_modules()} == flags


def count_calls(module: nn.Module) -> tuple[list[int], object]:
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    return calls, module.register_forward_hook(hook)


@pytest.mark.parametrize(("stop_early", "expected"), [(True, 1), (False, 6)])
def test_stop_forward_early_skips_later_blocks(model, batches, exact_fit_settings, stop_early, expected) -> None:
    block_calls, first = count_calls(model.blocks[1])
    head_calls, second = count_calls(model.head)
    try:
        state = fit(
            model,
            batches,
            target_modules=r"blocks\.0\.(q|k|v|o|up|down)",
            stop_forward_early=stop_early,
            **exact_fit_settings,
        )
    finally:
        first.remove()
        second.remove()
    assert state.steps == 6
    # with the early stop only the first (discovery) batch runs past block 0
    assert block_calls[0] == expected
    assert head_calls[0] == expected


def test_converged_layers_stop_being_measured(model, make_batches) -> None:
    """tau=0 converges everything at min_steps=2; rows stop growing for converged layers and the fit ends."""
    state = fit(model, make_batches(10, masked=False), rank=4, tau=0.0, min_steps=2, max_steps=10, progress=False)
    assert state.steps == 2
    assert all(layer.rows == 2 * 4 * 10 for layer in state.layers.values())


def test_masked_rows_are_excluded(model, batches, exact_fit_settings) -> None:
    state = fit(model, batches, **exact_fit_settings)
    kept = sum(int(((b["attention_mask"] != 0) & (b["labels"] != -100)).sum()) for b in batches)
    total = sum(b["input_ids"].numel() for b in batches)
    assert kept < total
    assert {layer.rows for layer in state.layers.values()} == {kept}


def test_only_attention_mask_or_only_labels(model, batches, exact_fit_settings) -> None:
    only_attention = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    state = fit(model, only_attention, **exact_fit_settings)
    assert state.layers["head"].rows == sum(int(b["attention_mask"].sum()) for b in batches)
    only_labels = [{k: v for k, v in b.items() if k != "attention_mask"} for b in batches]
    state = fit(model, only_labels, **exact_fit_settings)
    assert state.layers["head"].rows == sum(int((b["labels"] != -100).sum()) for b in batches)


def test_first_batch_fully_masked(model, make_batches, exact_fit_settings) -> None:
    """A first batch with no row left counts for nothing and does not poison later batches."""
    batches = make_batches(6)
    batches[0]["attention_mask"].zero_()
    state = fit(model, batches, **exact_fit_settings)
    kept = sum(int(((b["attention_mask"] != 0) & (b["labels"] != -100)).sum()) for b in batches)
    assert {layer.rows for layer in state.layers.values()} == {kept}
    assert all(torch.isfinite(layer.components).all() for layer in state.layers.values())


@pytest.mark.parametrize("layer", ["blocks.0.q", "blocks.0.up", "blocks.1.down"])
def test_components_match_svd_of_unmasked_rows(model, batches, exact_fit_settings, layer) -> None:
    captured = []
    masks = iter([(b["attention_mask"] != 0) & (b["labels"] != -100) for b in batches])

    def grab(module: nn.Module, args: tuple) -> None:
        captured.append(args[0][next(masks)].double())  # (N_kept, d_in)

    handle = model.get_submodule(layer).register_forward_pre_hook(grab)
    try:
        state = fit(model, batches, **exact_fit_settings)
    finally:
        handle.remove()
    rows = torch.cat(captured)
    assert rows.shape[0] == state.layers[layer].rows
    centered = rows - rows.mean(dim=0)
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    spectrum = state.layers[layer]
    top = 3
    cos = (spectrum.components[:top].double() * vh[:top]).sum(dim=1).abs()
    assert cos.min().item() >= 0.999, cos
    torch.testing.assert_close(spectrum.singular_values[:top].double(), s[:top], rtol=1e-4, atol=0)
    torch.testing.assert_close(
        spectrum.explained_variance_ratio[:top].double(), (s[:top] ** 2) / (s**2).sum(), rtol=1e-4, atol=0
    )


def endless(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield {"input_ids": torch.randint(0, 64, (2, 8), generator=generator)}


def test_max_steps_stops_an_endless_generator_and_warns(model) -> None:
    targets = ["blocks.0.q", "blocks.0.k", "blocks.0.up", "head"]
    with pytest.warns(NotConvergedWarning) as record:
        state = fit(model, endless(), rank=2, tau=1.0, max_steps=5, target_modules=targets, progress=False)
    assert state.steps == 5
    assert state.not_converged == targets
    message = str(record[0].message)
    assert "max_steps=5" in message
    assert "before 4 of 4 layers converged" in message
    assert all(name in message for name in targets)


def test_not_converged_warning_abbreviates_long_lists(model) -> None:
    with pytest.warns(NotConvergedWarning, match=r"and 8 more\. ") as record:
        fit(model, endless(1), rank=2, tau=1.0, max_steps=3, progress=False)
    assert "blocks.0.q, blocks.0.k, blocks.0.v, blocks.0.o, blocks.0.up and 8 more" in str(record[0].message)


def test_data_running_out_ends_the_fit(model, make_batches) -> None:
    with pytest.warns(NotConvergedWarning):
        state = fit(model, make_batches(3), rank=2, tau=1.0, max_steps=50, progress=False)
    assert state.steps == 3


@pytest.mark.parametrize("min_steps", [1, 3, 5])
def test_min_steps_respected(model, make_batches, min_steps: int) -> None:
    state = fit(model, make_batches(8), rank=4, tau=0.0, min_steps=min_steps, max_steps=8, progress=False)
    # convergence compares two consecutive steps, so the earliest possible step is 2
    assert state.steps == max(min_steps, 2)
    assert {layer.converged_at for layer in state.layers.values()} == {max(min_steps, 2)}


def test_no_layer_converges_before_min_steps_with_real_tau(model, make_batches) -> None:
    state = fit(model, make_batches(30, masked=False), rank=2, tau=0.9, min_steps=4, max_steps=30, progress=False)
    converged_at = [layer.converged_at for layer in state.layers.values()]
    assert all(step is not None and 4 <= step <= state.steps for step in converged_at)
    assert all(layer.converged for layer in state.layers.values())


@pytest.mark.parametrize(("check_every", "max_steps", "expected"), [(3, 12, 6), (3, 4, 4), (1, 12, 2)])
def test_check_every(model, make_batches, check_every: int, max_steps: int, expected: int) -> None:
    """Convergence is tested every check_every batches, and always at max_steps; tau=0 converges at the
    second test."""
    state = fit(
        model,
        make_batches(12),
        rank=4,
        tau=0.0,
        min_steps=1,
        max_steps=max_steps,
        check_every=check_every,
        progress=False,
    )
    assert state.steps == expected
    assert {layer.converged_at for layer in state.layers.values()} == {expected}
