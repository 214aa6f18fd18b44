"""Property-based hunts over ``eva_core.fit``: configs, batch shapes, padding masks, dtypes and value ranges.

For every generated case: the model's parameters and buffers are bit-identical after the fit; the fit
either succeeds or raises an ``EvaError`` whose message names what to change; ranks respect the budget,
the caps and the rows seen; components (whitened too) are finite and orthonormal. For float32/float64
inputs at any scale, the components also match the exact SVD of all unmasked rows.
"""

from __future__ import annotations

import re
import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from eva_core import fit
from eva_core.errors import EvaError, EvaWarning
from eva_core.svd import GramStatistics, SketchStatistics

WIDTH = 6
LAYERS = ("a", "c", "b")  # a and c share their input; b reads a's output


class Net(nn.Module):
    """``a`` and ``c`` read the (B, T, 6) input, ``b`` reads tanh of ``a``'s output."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c, self.b = nn.Linear(WIDTH, 8), nn.Linear(WIDTH, 3), nn.Linear(8, 4)
        self.register_buffer("offset", torch.linspace(-1, 1, 8))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.tanh(self.a(x) + self.offset)
        return self.b(h).sum() + self.c(x).sum()


PROFILE = torch.logspace(0.5, -1.5, WIDTH, dtype=torch.float64)  # well separated input spectrum


@st.composite
def inputs(draw: st.DrawFn, float_only: bool = False) -> tuple[list[dict], torch.dtype, str]:
    """(batches, dtype, kind): 1-3 dict batches of x (B, T, 6) and, sometimes, an attention mask."""
    dtypes = (
        [torch.float32, torch.float64] if float_only else [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    )
    dtype = draw(st.sampled_from(dtypes))
    kind = "random" if float_only else draw(st.sampled_from(["random", "random", "random", "constant", "zeros"]))
    scale = draw(st.sampled_from([1e-18, 1e-6, 1.0, 1e6, 1e18]))
    offset = draw(st.sampled_from([0.0, 0.0, 3.0]))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(draw(st.integers(1, 3))):
        size, length = draw(st.integers(1, 5)), draw(st.integers(1, 6))
        if kind == "random":
            x = torch.randn(size, length, WIDTH, generator=generator, dtype=torch.float64) * PROFILE + offset
        else:
            x = torch.full((size, length, WIDTH), 0.0 if kind == "zeros" else 1.5, dtype=torch.float64)
        batch = {"x": (x * scale).to(dtype)}
        if draw(st.booleans()):
            batch["attention_mask"] = torch.rand(size, length, generator=generator) < draw(
                st.sampled_from([0.0, 0.5, 1.0])
            )
        batches.append(batch)
    return batches, dtype, kind


configs = st.fixed_dictionaries(
    {
        "rank": st.integers(1, 4),
        "rho": st.sampled_from([1, 1.5, 2, 3]),
        "tau": st.sampled_from([0.0, 0.5, 0.99]),
        "whiten": st.booleans(),
        "centered": st.booleans(),
        "share_identical_inputs": st.booleans(),
        "gram_memory_bytes": st.sampled_from([4 * 1024**3, 0]),
        "max_steps": st.integers(1, 3),
    }
)

CASES = {"fit": 0, "succeeded": 0, "refused": 0, "exact": 0}


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def rows_of(batches: list[dict]) -> torch.Tensor:
    """The unmasked rows (N, 6) of all batches, float64 (what ``a`` and ``c`` must have measured)."""
    kept = []
    for batch in batches:
        x = batch["x"].double().reshape(-1, WIDTH)
        mask = batch.get("attention_mask")
        kept.append(x if mask is None else x[mask.reshape(-1)])
    return torch.cat(kept)


def measured(batches: list[dict]) -> list[dict]:
    """The batches that add rows: a B == T batch with an asymmetric mask, before any masked batch with
    B != T showed the layout, adds none."""
    kept, known = [], False
    for batch in batches:
        mask = batch.get("attention_mask")
        known = known or (mask is not None and mask.shape[0] != mask.shape[1])
        if known or mask is None or torch.equal(mask, mask.T):
            kept.append(batch)
    return kept


def check_state(state, config: dict, rows: int) -> None:
    """The invariants of a successful fit."""
    cap = max(config["rank"], round(config["rho"] * config["rank"]))
    assert sum(state.ranks.values()) <= config["rank"] * len(LAYERS)
    for name, layer in state.layers.items():
        rank = state.ranks[name]
        usable = layer.rows - 1 if config["centered"] else layer.rows
        assert 0 <= rank <= min(cap, usable, layer.components.shape[0]), (name, rank, layer.rows)
        components = layer.components.double()
        assert torch.isfinite(components).all()
        torch.testing.assert_close(
            components @ components.T, torch.eye(len(components), dtype=torch.float64), atol=1e-4, rtol=0
        )
        assert torch.isfinite(layer.explained_variance).all() and (layer.explained_variance[:rank] > 0).all()
        assert torch.isfinite(state.components(name)).all()
        if name in ("a", "c"):  # a layer that converged stopped being measured
            assert layer.rows == rows if not layer.converged else layer.rows <= rows


def names_what_to_change(message: str) -> bool:
    """An EvaError message names a layer, a config field or the batches."""
    fields = ("rank", "rho", "tau", "centered", "whiten", "target_modules", "max_steps", "batches")
    return bool(re.search(r"'(a|b|c)'", message)) or any(field in message for field in fields)


@settings(max_examples=120)
@given(data=inputs(), config=configs)
def test_fit_keeps_its_invariants(data, config: dict) -> None:
    batches, dtype, _ = data
    torch.manual_seed(0)
    model = Net().to(dtype)
    before = snapshot(model)
    CASES["fit"] += 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            state = fit(model, batches, progress=False, **config)
        except EvaError as error:
            CASES["refused"] += 1
            assert names_what_to_change(str(error)), str(error)
            state = None
    assert all(issubclass(w.category, EvaWarning) for w in caught), [str(w.message) for w in caught]
    after = snapshot(model)
    assert all(torch.equal(before[name], after[name]) for name in before)
    if state is not None:
        CASES["succeeded"] += 1
        check_state(state, config, rows_of(measured(batches[: state.steps])).shape[0])


@settings(max_examples=60)
@given(data=inputs(float_only=True), rank=st.integers(1, 3), centered=st.booleans(), sketch=st.booleans())
def test_components_span_the_exact_svd_of_all_unmasked_rows(data, rank: int, centered: bool, sketch: bool) -> None:
    """Every batch measured to the end (tau=0, min_steps = max_steps = the batches): ``a``'s allocated
    components span the same subspace as the exact SVD's top ones, whenever a spectral gap defines it."""
    batches, dtype, _ = data
    rows = rows_of(measured(batches))
    x = rows - rows.mean(dim=0) if centered else rows
    if rows.shape[0] < 3:
        return
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    steps = len(batches)
    memory = 0 if sketch else 4 * 1024**3
    settings_ = {"tau": 0.0, "min_steps": steps, "max_steps": steps, "progress": False, "gram_memory_bytes": memory}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EvaWarning)
        state = fit(Net().to(dtype), batches, rank=rank, rho=2, centered=centered, **settings_)
    CASES["exact"] += 1
    layer, held = state.layers["a"], state.ranks["a"]
    k = min(held, len(s) - 1)
    if k == 0 or s[k - 1] < 1.2 * s[k] or s[k - 1] ** 2 < 1e-4 * s[0] ** 2:
        return  # no gap: the top-k subspace is not defined (or is float noise)
    ours = layer.components[:k].double()  # (k, 6)
    overlap = torch.linalg.svdvals(ours @ vh[:k].T)  # cosines of the principal angles
    assert overlap.min().item() >= 0.999, (overlap, s)


@settings(max_examples=80)
@given(
    scale=st.sampled_from([1e-18, 1e-9, 1.0, 1e9, 1e18]),
    offset=st.sampled_from([0.0, 1.0, 100.0]),
    rank=st.integers(1, WIDTH),
    chunks=st.integers(1, 4),
    centered=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_statistics_match_the_exact_svd_at_any_scale(scale, offset, rank, chunks, centered, seed) -> None:
    """Gram and sketch statistics of rank-deficient rows at any scale: ratios match the exact SVD, no
    component beyond the true rank has variance, and those within it all do."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(90, rank, generator=generator, dtype=torch.float64) * 0.6 ** torch.arange(rank)
    basis, _ = torch.linalg.qr(torch.randn(WIDTH, rank, generator=generator, dtype=torch.float64))
    rows = ((latent @ basis.T + offset) * scale).float()
    x = rows.double() - rows.double().mean(dim=0) if centered else rows.double()
    s = torch.linalg.svdvals(x)
    ratios = s**2 / (s**2).sum()
    true_rank = int((ratios > 1e-5).sum())
    for stats in (
        GramStatistics(WIDTH, "cpu", centered=centered),
        SketchStatistics(WIDTH, 16, "cpu", centered=centered),
    ):
        for chunk in rows.chunk(chunks):
            stats.update(chunk)
        spectrum = stats.top(WIDTH, exact=True)
        alive = int((spectrum.explained_variance > 0).sum())
        assert true_rank <= alive <= int((ratios > 1e-7).sum()), (type(stats).__name__, ratios, spectrum)
        torch.testing.assert_close(
            spectrum.explained_variance_ratio[:true_rank].double(), ratios[:true_rank], rtol=2e-3, atol=1e-6
        )
        CASES["exact"] += 1


def test_zz_report_case_counts() -> None:
    """Not a check: prints how many generated cases each property ran (``pytest -s``)."""
    print(f"\nfit property cases: {CASES}")
