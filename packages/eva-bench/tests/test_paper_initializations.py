"""The EVA paper's other baselines and EVA's variants, each checked against its definition on a tiny model.

MiLoRA (ours) against an SVD of W; CorDA, LoRA-GA, AdaLoRA and DoRA (peft's) against what their papers
define, computed here from the same weights, data and loss; the EVA variants against the settings their
names promise.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from eva_bench import ALL_METHODS, initialize, train
from eva_bench.peft_initializations import single_examples
from eva_core.errors import InvalidConfigError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6))


def _delta(layer: nn.Module) -> torch.Tensor:
    """The adapter's contribution ``scaling * B @ A`` (d_out, d_in)."""
    return layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight


def _batches(count: int = 3, rows: int = 4, tokens: int = 5) -> list[torch.Tensor]:
    """(B, T, 12) token inputs with a few dominant directions, so spectra are far from flat (peft's CorDA
    hook squeezes the batch dimension of one example, so it takes token inputs only)."""
    generator = torch.Generator().manual_seed(1)
    scales = torch.tensor([8.0, 4.0, 2.0] + [0.5] * 9)
    return [torch.randn(rows, tokens, 12, generator=generator) * scales for _ in range(count)]


def _loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """A regression loss toward a fixed target, so gradients are not zero."""
    target = torch.sin(batch[..., :6])
    return ((model(batch) - target) ** 2).mean()


def test_every_method_builds_a_model_whose_output_is_unchanged_or_near_it() -> None:
    """At step 0 every method computes the base model's function: B = 0, or W replaced by a residual."""
    x = _batches(1)[0]
    with torch.no_grad():
        expected = _model()(x)
    for method in ALL_METHODS:
        peft_model = initialize(
            _model(), method, _batches(), rank=2, target_modules=["0", "2"], loss_fn=_loss, steps=20,
            eva_overrides={"tau": 0.0, "progress": False},
        )  # fmt: skip
        with torch.no_grad():
            torch.testing.assert_close(peft_model(x), expected, rtol=1e-4, atol=1e-4, msg=method)


def test_milora_starts_from_the_minor_singular_directions() -> None:
    original = _model()
    weight = original[0].weight.detach().clone()
    peft_model = initialize(original, "milora", rank=3, target_modules=["0"])
    layer = peft_model.base_model.model[0]
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)  # (10, 10), (10,), (10, 12)
    minor = u[:, -3:] @ torch.diag(s[-3:]) @ vh[-3:]
    torch.testing.assert_close(_delta(layer), minor, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.base_layer.weight + _delta(layer), weight, rtol=0, atol=1e-5)
    # the residual keeps the principal part: its top singular values are W's
    residual_s = torch.linalg.svdvals(layer.base_layer.weight)
    torch.testing.assert_close(residual_s[:7], s[:7], rtol=0, atol=1e-5)


def test_dora_adds_a_magnitude_equal_to_the_column_norms_of_w() -> None:
    original = _model()
    weight = original[0].weight.detach().clone()
    peft_model = initialize(original, "dora", rank=2, target_modules=["0"])
    layer = peft_model.base_model.model[0]
    magnitude = layer.lora_magnitude_vector["default"].weight  # (d_out,)
    torch.testing.assert_close(magnitude, weight.norm(dim=1), rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(layer.lora_B["default"].weight) == 0


def test_corda_factors_w_times_the_input_covariance() -> None:
    """IPM CorDA: ``W C = U S V^T`` (C the damped covariance of the inputs, each example scaled by its max),
    adapter ``U_r S_r (V^T C^-1)_r``, residual the rest."""
    original = _model()
    weight = original[0].weight.detach().clone()
    batches = _batches()
    peft_model = initialize(original, "corda", batches, rank=3, target_modules=["0"], loss_fn=_loss)
    examples = [tokens for batch in batches for tokens in batch]  # (T, 12) each: one example at a time
    covariance = sum((x / x.max().abs()).T @ (x / x.max().abs()) for x in examples) / len(examples)  # (12, 12)
    damped = covariance + torch.eye(12) * covariance.diagonal().mean() * 0.01
    u, s, vh = torch.linalg.svd(weight @ damped, full_matrices=False)
    expected = u[:, :3] @ torch.diag(s[:3]) @ (vh @ torch.linalg.inv(damped))[:3]
    layer = peft_model.base_model.model[0]
    torch.testing.assert_close(_delta(layer), expected, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(layer.base_layer.weight + _delta(layer), weight, rtol=0, atol=1e-5)


def test_loraga_aligns_a_and_b_with_the_singular_vectors_of_the_loss_gradient() -> None:
    """LoRA-GA (ArB2r): rows of A span the top-r right singular vectors of dL/dW averaged over the
    calibration batches; columns of B span the left ones r..2r."""
    original = _model()
    weight = original[0].weight.detach().clone()
    batches = _batches(count=4)
    reference = copy.deepcopy(original)
    for batch in batches:
        _loss(reference, batch).backward()
    gradient = reference[0].weight.grad / len(batches)  # (10, 12)
    u, _, vh = torch.linalg.svd(gradient, full_matrices=False)
    peft_model = initialize(original, "loraga", batches, rank=2, target_modules=["0"], loss_fn=_loss)
    layer = peft_model.base_model.model[0]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (2, 12), (10, 2)
    _assert_same_span(a.T, vh[:2].T)
    _assert_same_span(b, u[:, 2:4])
    torch.testing.assert_close(layer.base_layer.weight + _delta(layer), weight, rtol=0, atol=1e-5)


def _assert_same_span(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The columns of ``got`` and ``expected`` (d, r) span the same subspace."""
    q_got, _ = torch.linalg.qr(got)
    q_expected, _ = torch.linalg.qr(expected)
    torch.testing.assert_close(q_got @ q_got.T, q_expected @ q_expected.T, rtol=0, atol=1e-3)


def test_adalora_prunes_to_the_average_rank_during_training() -> None:
    """AdaLoRA starts at ceil(1.5 r) per layer; :func:`train` calls its allocator after every step, and at
    the end the kept ranks sum to r per layer."""
    steps = 30
    peft_model = initialize(_model(), "adalora", rank=2, target_modules=["0", "2"], steps=steps)
    layer = peft_model.base_model.model[0]
    assert layer.lora_A["default"].shape == (math.ceil(1.5 * 2), 12)
    batches = _batches(count=4)
    train(peft_model, batches, _loss, lambda model: {"loss": 0.0}, steps=steps, eval_at=[steps], lr=1e-2)
    pattern = peft_model.peft_config["default"].rank_pattern
    assert pattern, "update_and_allocate never masked the ranks"
    assert sum(sum(mask) for mask in pattern.values()) == 2 * 2


def test_eva_variants_fix_their_settings_over_the_callers() -> None:
    overrides = {"rho": 2.0, "whiten": True, "tau": 0.0, "progress": False}
    fits = {
        method: initialize(_model(), method, _batches(), rank=2, target_modules=["0", "2"], eva_overrides=overrides)
        for method in ("eva", "eva_rho1", "eva_whiten", "eva_dora")
    }
    assert set(fits["eva_rho1"].eva_state.ranks.values()) == {2}
    assert fits["eva_rho1"].eva_state.config.rho == 1.0
    assert not fits["eva"].eva_state.config.whiten and fits["eva_whiten"].eva_state.config.whiten
    dora = fits["eva_dora"].base_model.model[0]
    assert "default" in dora.lora_magnitude_vector
    name = "0"
    torch.testing.assert_close(dora.lora_A["default"].weight, fits["eva_dora"].eva_state.components(name))
    assert torch.count_nonzero(dora.lora_B["default"].weight) == 0


@pytest.mark.parametrize(
    ("method", "kwargs", "named"),
    [
        ("corda", {"batches": None, "loss_fn": _loss}, "batches"),
        ("loraga", {"batches": _batches()}, "loss_fn"),
        ("adalora", {}, "steps"),
    ],
)
def test_a_method_missing_what_it_needs_names_it(method: str, kwargs: dict, named: str) -> None:
    with pytest.raises(InvalidConfigError, match=named):
        initialize(_model(), method, rank=2, target_modules=["0"], **kwargs)


@pytest.mark.parametrize("method", ["corda", "loraga", "adalora"])
def test_convolutions_are_refused_by_name_where_peft_has_no_implementation(method: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    batches = [torch.randn(2, 3, 5, 5)]
    with pytest.raises(InvalidConfigError, match=r"convolution.*0 \(Conv2d\)"):
        initialize(model, method, batches, rank=2, target_modules=["0"], loss_fn=lambda m, b: m(b).sum(), steps=10)


def test_single_examples_split_tensors_mappings_and_tuples() -> None:
    batch = {"x": torch.arange(6).reshape(3, 2), "mask": torch.ones(3, 4), "name": "kept", "scalar": torch.tensor(1)}
    examples = list(single_examples(batch))
    assert len(examples) == 3
    assert examples[1]["x"].tolist() == [[2, 3]] and examples[1]["mask"].shape == (1, 4)
    assert examples[2]["name"] == "kept" and examples[2]["scalar"].item() == 1
    pairs = list(single_examples((torch.zeros(2, 5), torch.ones(2))))
    assert [tuple(p[0].shape) for p in pairs] == [(1, 5), (1, 5)] and isinstance(pairs[0], tuple)
    assert list(single_examples("opaque")) == ["opaque"]


_MEASURE = """
import json, torch
from eva_bench import measure_cost
with measure_cost() as small:
    torch.zeros(10)
with measure_cost() as large:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, touched
    del block
print(json.dumps([small.peak_bytes, large.peak_bytes, large.seconds, large.cpu_seconds]))
"""


def test_measure_cost_sees_a_large_allocation_inside_the_block() -> None:
    # In a fresh process: what earlier tests allocated and freed can make the allocator reuse pages already
    # resident, which is right for a measurement but not what this test is about.
    out = subprocess.run([sys.executable, "-c", _MEASURE], capture_output=True, text=True, check=True).stdout
    small, large, seconds, cpu_seconds = json.loads(out.splitlines()[-1])
    if large is None:
        pytest.skip("peak memory is not measurable on this platform")
    assert large >= 60 * 2**20
    assert small is not None and small < 16 * 2**20
    assert seconds > 0 and cpu_seconds >= 0
