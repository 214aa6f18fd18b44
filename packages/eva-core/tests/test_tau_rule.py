"""The paper's stopping rule (``tau`` set) against a reference computed without eva_core's solver.

The rule: at every check (every ``check_every`` batches, and at ``max_steps``), each measured input's top
``need`` components (``need`` = the largest rank the allocation of that moment gives a layer reading the
input, at least 1) are compared with the same components at the input's previous check; once every
``|cos| >= tau`` (and ``step >= min_steps``) the input has converged and stops being measured, until a
later allocation gives it more rank than it converged with (then it is measured again).

Here the model is a router: each group of layers reads its own columns of the batch, so the rows every
layer sees are known exactly. The reference replays the fit: exact float64 centered scatter of all rows an
input has seen, ``torch.linalg.eigh``, the allocation recomputed by hand from those spectra, and the
cosines; it predicts ``converged_at``, the rows and the steps, which the fit must match exactly. Each
reference also asserts the data leave no decision to float noise (no deciding cosine within 1e-4 of
``tau``, clear eigengaps and allocation boundaries), so a poor construction fails loudly instead of
flaking. Every call passes ``tau`` explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from torch import nn

from eva_core import fit
from eva_core.errors import NotConvergedWarning

WIDTH = 8  # d_in of every layer
COSINE_MARGIN = 1e-4  # no deciding cosine this close to tau
GAP_MARGIN = 5e-3  # eigengaps of the compared components, relative to the trace
SCORE_MARGIN = 1e-3  # relative gap between the last component allocated and the first one left out


class Router(nn.Module):
    """Group ``g`` of ``groups`` (lists of layer names) reads columns ``[g * WIDTH, (g + 1) * WIDTH)`` of the
    (N, G * WIDTH) batch; the layers of one group receive the very same tensor (as q, k and v do)."""

    def __init__(self, groups: list[list[str]]) -> None:
        super().__init__()
        self.groups = groups
        for names in groups:
            for name in names:
                self.add_module(name, nn.Linear(WIDTH, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(())
        for g, names in enumerate(self.groups):
            part = x[:, g * WIDTH : (g + 1) * WIDTH]  # (N, d_in), one tensor for the whole group
            for name in names:
                out = out + getattr(self, name)(part).sum()
        return out


@dataclass
class Prediction:
    """What the reference expects of a fit, per group (keyed by its first layer)."""

    steps: int
    converged_at: dict[str, int | None]
    rows: dict[str, int]
    failed: dict[str, list[int]] = field(default_factory=dict)  # checks where the group was tested, unstable
    reopened: list[tuple[int, str]] = field(default_factory=list)  # (step, group)
    needs: dict[str, list[int]] = field(default_factory=dict)  # the need at every check
    flipped: list[tuple[int, str]] = field(default_factory=list)  # converged with a negative signed cosine
    closest: float = math.inf  # the smallest |min cosine - tau| over the deciding checks
    tight: list[str] = field(default_factory=list)  # why a float-noise-free decision is not guaranteed
    final: dict[str, torch.Tensor] = field(default_factory=dict)  # (d,) top component of all rows seen


def _spectrum(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact top-``k`` of the centered scatter of ``rows`` (N, d) in float64: components (k, d), their
    variance ratios (k,), and every eigenvalue divided by the trace (d,), descending."""
    centered = rows - rows.mean(dim=0)
    scatter = centered.T @ centered  # (d, d)
    values, vectors = torch.linalg.eigh(scatter)
    values, vectors = values.flip(0), vectors.flip(1)
    relative = values / scatter.trace()
    return vectors[:, :k].T, relative[:k], relative


def _oriented(components: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``components`` (k, d) with each row's largest-magnitude entry positive (eva's convention), and the
    smallest gap between the two largest magnitudes of a row (how clearly that sign is decided)."""
    magnitudes = components.abs().sort(dim=1, descending=True).values  # (k, d)
    index = components.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(components.gather(1, index))
    return components * signs, float((magnitudes[:, 0] - magnitudes[:, 1]).min())


def _allocate(groups: list[list[str]], ratios: dict[str, torch.Tensor], budget: int, cap: int) -> tuple[dict, float]:
    """EVA's allocation redone by hand: every layer offers its group's top ``cap`` ratios, the ``budget``
    best candidates win (ties to the layer listed first, then the lower component). Returns group -> the
    largest rank of any member, and the relative score gap at the budget's edge between two groups."""
    candidates = []
    for g, names in enumerate(groups):
        if names[0] not in ratios:
            continue
        for m in range(len(names)):
            candidates += [(-float(r), g, m, j) for j, r in enumerate(ratios[names[0]][:cap].tolist())]
    candidates.sort()
    counts: dict[tuple[int, int], int] = {}
    for _, g, m, _ in candidates[:budget]:
        counts[g, m] = counts.get((g, m), 0) + 1
    need = {names[0]: max(counts.get((g, m), 0) for m in range(len(names))) for g, names in enumerate(groups)}
    edge = math.inf
    if 0 < budget < len(candidates):
        (s1, g1, _, j1), (s2, g2, _, j2) = candidates[budget - 1], candidates[budget]
        if (g1, j1) != (g2, j2):
            edge = abs(s1 - s2) / abs(s1)
    return need, edge


def predict(
    groups: list[list[str]],
    batches: list[torch.Tensor],
    *,
    rank: int,
    rho: float,
    tau: float,
    min_steps: int,
    check_every: int,
    max_steps: int,
) -> Prediction:
    """Replay the paper's rule on ``batches`` (N, G * WIDTH) for a :class:`Router` over ``groups``."""
    keys = [names[0] for names in groups]
    cap = max(rank, round(rho * rank))
    k = min(cap, WIDTH)
    budget = rank * sum(len(names) for names in groups)
    parts = {key: [b.double()[:, g * WIDTH : (g + 1) * WIDTH] for b in batches] for g, key in enumerate(keys)}
    seen: dict[str, list[int]] = {key: [] for key in keys}
    active = set(keys)
    now: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # components, ratios, eigengaps
    before: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = dict.fromkeys(keys)
    result = Prediction(0, dict.fromkeys(keys), {}, {key: [] for key in keys}, needs={key: [] for key in keys})
    converged_rank = dict.fromkeys(keys, 0)
    for step in range(1, max_steps + 1):
        for key in active:
            seen[key].append(step - 1)
        result.steps = step
        if step % check_every and step < max_steps:
            continue
        measured = [key for key in keys if key in active]
        for key in measured:
            before[key] = now.get(key)
            components, ratios, relative = _spectrum(torch.cat([parts[key][i] for i in seen[key]]), k)
            now[key] = (components, ratios, relative[:-1] - relative[1:])
        need, edge = _allocate(groups, {key: value[1] for key, value in now.items()}, budget, cap)
        if edge < SCORE_MARGIN:
            result.tight.append(f"step {step}: allocation edge {edge:.2e}")
        for key in keys:
            wanted = max(1, need[key])
            result.needs[key].append(wanted)
            if key not in measured:
                if result.converged_at[key] is not None and wanted > converged_rank[key]:
                    result.converged_at[key] = None
                    result.reopened.append((step, key))
                    active.add(key)
                continue
            previous = before[key]
            if step < min_steps or previous is None:
                continue
            current, then = now[key][0][:wanted], previous[0][:wanted]
            gap = float(min(now[key][2][:wanted].min(), previous[2][:wanted].min()))
            if gap < GAP_MARGIN:  # the compared components must be well defined, now and at the check before
                result.tight.append(f"step {step}, {key}: eigengap {gap:.2e}")
            cosine = (current * then).sum(dim=1).abs()  # (need,)
            result.closest = min(result.closest, abs(float(cosine.min()) - tau))
            if bool((cosine >= tau).all()):
                result.converged_at[key], converged_rank[key] = step, wanted
                active.discard(key)
                (oriented, sure), (oriented_then, sure_then) = _oriented(current), _oriented(then)
                if bool(((oriented * oriented_then).sum(dim=1) < 0).any()) and min(sure, sure_then) > 1e-3:
                    result.flipped.append((step, key))
            else:
                result.failed[key].append(step)
        if not active:
            break
    if result.closest < COSINE_MARGIN:
        result.tight.append(f"a deciding cosine lies {result.closest:.1e} from tau={tau}")
    result.rows = {key: sum(parts[key][i].shape[0] for i in seen[key]) for key in keys}
    for key in keys:
        components, _, relative = _spectrum(torch.cat([parts[key][i] for i in seen[key]]), 1)
        if relative[0] - relative[1] < GAP_MARGIN:
            result.tight.append(f"{key}: final eigengap {float(relative[0] - relative[1]):.2e}")
        result.final[key] = components[0]
    return result


def run_and_compare(groups: list[list[str]], batches: list[torch.Tensor], **settings: object) -> Prediction:
    """Fit a :class:`Router` on ``batches`` with ``settings`` (tau among them) and assert it does exactly what
    :func:`predict` says: steps, ``converged_at``, ``converged``, the rows of every layer and its top
    component (so the statistics hold exactly the batches measured, not just as many rows)."""
    expected = predict(groups, batches, **settings)  # type: ignore[arg-type]
    assert not expected.tight, f"the data leave a decision to float noise: {expected.tight}"
    torch.manual_seed(0)
    model = Router(groups)
    names = [name for names in groups for name in names]
    call = dict(settings, target_modules=names, progress=False)
    if all(step is not None for step in expected.converged_at.values()):
        state = fit(model, batches, **call)
    else:
        with pytest.warns(NotConvergedWarning):
            state = fit(model, batches, **call)
    assert state.steps == expected.steps
    for names_ in groups:
        for name in names_:
            layer = state.layers[name]
            assert layer.converged_at == expected.converged_at[names_[0]], (name, expected)
            assert layer.converged == (expected.converged_at[names_[0]] is not None)
            assert layer.rows == expected.rows[names_[0]], (name, expected)
            assert abs(float(layer.components[0].double() @ expected.final[names_[0]])) > 1 - 1e-5, name
    assert "estimated_error" not in state.extra  # only the new rule (tau=None) estimates errors
    return expected


# numpy's RandomState: its stream is frozen across numpy versions (torch's seeded streams are not promised to
# be), so the scenarios below stay the same under every torch and numpy the sessions install
def gaussian(random: np.random.RandomState, n: int, variances: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """(n, d) rows with covariance ``basis diag(variances) basis^T`` (basis (d, d) orthonormal columns)."""
    return (torch.from_numpy(random.standard_normal((n, variances.shape[0]))) * variances.sqrt()) @ basis.T


def rotation(random: np.random.RandomState, d: int = WIDTH) -> torch.Tensor:
    """(d, d) a random orthonormal basis."""
    return torch.linalg.qr(torch.from_numpy(random.standard_normal((d, d))))[0]


def stationary(seed: int, count: int, n: int, decays: list[float]) -> list[torch.Tensor]:
    """``count`` batches of ``n`` rows; group g's rows have variances ``decays[g] ** i`` in a random basis."""
    random = np.random.RandomState(seed)
    bases = [rotation(random) for _ in decays]
    profiles = [decay ** torch.arange(WIDTH, dtype=torch.float64) for decay in decays]
    return [
        torch.cat([gaussian(random, n, p, b) for p, b in zip(profiles, bases, strict=True)], dim=1).float()
        for _ in range(count)
    ]


@pytest.mark.parametrize(("tau", "expected"), [(0.99, 6), (0.9, 5), (0.5, 3)])
def test_one_layer_checked_every_batch(tau: float, expected: int) -> None:
    """One layer, checked after every batch from min_steps=3 on: it converges at the first check whose two
    cosines reach tau. With tau 0.9 and 0.5 the check at step 2 would pass: min_steps holds it back (and
    with 0.9 the cosines drop below tau again at steps 3 and 4)."""
    batches = stationary(seed=4, count=30, n=8, decays=[0.6])
    settings = {"rank": 2, "rho": 1.0, "tau": tau, "min_steps": 3, "check_every": 1, "max_steps": 30}
    expected_fit = run_and_compare([["a"]], batches, **settings)
    assert expected_fit.converged_at["a"] == expected == expected_fit.steps
    assert len(expected_fit.failed["a"]) == expected - 3  # every check from min_steps on failed until then
    if tau < 0.99:
        assert predict([["a"]], batches, **{**settings, "min_steps": 1}).converged_at["a"] == 2


def test_checked_every_three_batches_and_at_max_steps() -> None:
    """Three inputs checked at steps 3, 6, 9 and 11 (max_steps, not a multiple of 3) with min_steps=5 and
    rho=2 (the allocation moves rank between them): a converges at 9 and is measured no more, b at the
    final check 11, c never."""
    batches = stationary(seed=24, count=11, n=8, decays=[0.5, 0.65, 0.8])
    groups = [["a"], ["b"], ["c"]]
    settings = {"rank": 2, "rho": 2.0, "tau": 0.99, "min_steps": 5, "check_every": 3, "max_steps": 11}
    expected = run_and_compare(groups, batches, **settings)
    assert expected.converged_at == {"a": 9, "b": 11, "c": None}
    assert expected.failed == {"a": [6], "b": [6, 9], "c": [6, 9, 11]}  # step 3 < min_steps is not tested
    assert expected.rows == {"a": 9 * 8, "b": 11 * 8, "c": 11 * 8}
    assert expected.needs == {"a": [2, 2, 2, 2], "b": [1, 2, 2, 2], "c": [3, 2, 2, 2]}  # moved by the allocation


def test_shared_input_converges_as_one() -> None:
    """q, k and v read one tensor: they converge together, at the step their shared input does, with the need
    the largest of their three ranks; o converges on its own at the last batch, its need moving between 2
    and 3 from check to check."""
    batches = stationary(seed=15, count=12, n=8, decays=[0.5, 0.7])
    groups = [["q", "k", "v"], ["o"]]
    settings = {"rank": 2, "rho": 2.0, "tau": 0.99, "min_steps": 3, "check_every": 1, "max_steps": 12}
    expected = run_and_compare(groups, batches, **settings)
    assert expected.converged_at == {"q": 4, "o": 12}
    assert expected.needs["o"] == [2, 2, 3, 2, 2, 3, 3, 3, 3, 2, 3, 2]


def drifting(seed: int, count: int, n: int, switch: int) -> list[torch.Tensor]:
    """Batches for two inputs. ``a`` is stationary, variance ratios about (0.40, 0.22, 0.14, ...). ``b``'s
    rows grow by 2x each batch (so the latest batches dominate its statistics) and turn by 0.3 rad in four
    planes (so its components never settle); from batch ``switch`` on its variance profile flattens from
    (0.33, 0.29, 0.25, 0.06, ...) to (0.20, 0.18, 0.16, ...), which moves rank from ``b`` to ``a``."""
    random = np.random.RandomState(seed)
    steady = torch.tensor([0.40, 0.22, 0.14, 0.09, 0.06, 0.045, 0.03, 0.015], dtype=torch.float64)
    early = torch.tensor([0.33, 0.29, 0.25, 0.06, 0.03, 0.02, 0.015, 0.005], dtype=torch.float64)
    late = torch.tensor([0.20, 0.18, 0.16, 0.14, 0.12, 0.09, 0.07, 0.04], dtype=torch.float64)
    a_basis, b_basis = rotation(random), rotation(random)
    batches = []
    for t in range(count):
        turn = torch.eye(WIDTH, dtype=torch.float64)
        cos, sin = math.cos(0.3 * t), math.sin(0.3 * t)
        for i in range(WIDTH // 2):
            j = i + WIDTH // 2
            turn[i, i], turn[j, j], turn[i, j], turn[j, i] = cos, cos, -sin, sin
        b_variances = (early if t < switch else late) * 4.0**t
        a_rows, b_rows = gaussian(random, n, steady, a_basis), gaussian(random, n, b_variances, b_basis @ turn)
        batches.append(torch.cat([a_rows, b_rows], dim=1).float())
    return batches


def test_a_converged_layer_is_measured_again_when_its_rank_grows() -> None:
    """``a`` converges at step 2 with need 1 (b takes 3 of the 4 ranks); once b's spectrum flattens the
    allocation gives a 2 ranks (step 5), so a is reopened: measured again from batch 6 on, compared with
    its components at step 2, and converges again at 6. b never converges (NotConvergedWarning). a's rows
    are those of batches 1, 2 and 6 only."""
    batches = drifting(seed=2, count=10, n=512, switch=4)
    settings = {"rank": 2, "rho": 2.0, "tau": 0.99, "min_steps": 2, "check_every": 1, "max_steps": 10}
    expected = run_and_compare([["a"], ["b"]], batches, **settings)
    assert expected.reopened == [(5, "a")]
    assert expected.needs["a"] == [1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    assert expected.converged_at == {"a": 6, "b": None}
    assert expected.rows == {"a": 3 * 512, "b": 10 * 512}


def test_a_component_whose_sign_flips_still_counts() -> None:
    """The cosine is taken in absolute value: at step 4 a compared component came out with the opposite sign
    (its largest entry changed), and the layer converges there all the same."""
    batches = stationary(seed=7, count=30, n=8, decays=[0.6])
    settings = {"rank": 2, "rho": 1.0, "tau": 0.99, "min_steps": 3, "check_every": 1, "max_steps": 30}
    expected = run_and_compare([["a"]], batches, **settings)
    assert expected.flipped == [(4, "a")]
    assert expected.converged_at == {"a": 4}


def test_the_bound_is_inclusive() -> None:
    """|cos| >= tau, not >: with tau=0 a component that turned by exactly 90 degrees (axis-aligned rows,
    whose top direction moves from e0 to e1) still counts, so the layer converges at its first test."""
    scales = torch.tensor([2.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    first = torch.cat([torch.diag(scales), -torch.diag(scales)])  # (16, d): a diagonal scatter, exactly
    second = first * torch.tensor([1.0, 10.0, 1, 1, 1, 1, 1, 1])  # e1 now carries the most variance
    settings = {"rank": 1, "rho": 1.0, "tau": 0.0, "min_steps": 1, "check_every": 1, "max_steps": 2}
    expected = predict([["a"]], [first, second], **settings)  # type: ignore[arg-type]
    assert expected.closest == 0.0  # the cosine is exactly 0 = tau
    assert expected.converged_at == {"a": 2}
    state = fit(Router([["a"]]), [first, second], target_modules=["a"], progress=False, **settings)
    assert (state.layers["a"].converged_at, state.steps) == (2, 2)


LAYOUTS = ([["a"]], [["a"], ["b"]], [["q", "k", "v"], ["o"]], [["a"], ["q", "k"], ["c"]])


@settings(max_examples=40)
@given(
    layout=st.sampled_from(LAYOUTS),
    seed=st.integers(0, 2**16),
    tau=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.995]),
    check_every=st.integers(1, 3),
    min_steps=st.integers(1, 5),
    rank=st.integers(1, 2),
    rho=st.sampled_from([1.0, 1.5, 2.0]),
    rows=st.sampled_from([8, 16, 48]),
    max_steps=st.integers(5, 14),
    decays=st.lists(st.floats(0.4, 0.8), min_size=3, max_size=3),
)
def test_converged_at_matches_the_reference(
    layout: list[list[str]],
    seed: int,
    tau: float,
    check_every: int,
    min_steps: int,
    rank: int,
    rho: float,
    rows: int,
    max_steps: int,
    decays: list[float],
) -> None:
    """Any layout, tau, check_every, min_steps, rank and rho: the fit's converged_at, rows and steps are the
    reference's, exactly. Draws whose data would leave a decision to float noise are skipped."""
    batches = stationary(seed, count=max_steps, n=rows, decays=decays[: len(layout)])
    settings_ = {
        "rank": rank, "rho": rho, "tau": tau, "min_steps": min_steps, "check_every": check_every, "max_steps": max_steps
    }  # fmt: skip
    assume(not predict(layout, batches, **settings_).tight)  # type: ignore[arg-type]
    expected = run_and_compare(layout, batches, **settings_)
    for key, step in expected.converged_at.items():  # what the draws covered (--hypothesis-show-statistics)
        event(
            "never converged"
            if step is None
            else "converged after a failed check"
            if expected.failed[key]
            else "converged at the first test"
        )
    if any(len(set(needs)) > 1 for needs in expected.needs.values()):
        event("the need of an input changed between checks")


@settings(max_examples=15)
@given(
    seed=st.integers(0, 2**16),
    switch=st.integers(2, 6),
    tau=st.sampled_from([0.95, 0.99, 0.999]),
    check_every=st.integers(1, 2),
    min_steps=st.integers(1, 3),
)
def test_reopening_matches_the_reference(seed: int, switch: int, tau: float, check_every: int, min_steps: int) -> None:
    """Rank moving from a drifting input to a converged one: whether and when it is reopened, and when it
    converges again, are the reference's."""
    batches = drifting(seed, count=10, n=512, switch=switch)
    settings_ = {"rank": 2, "rho": 2.0, "tau": tau, "min_steps": min_steps, "check_every": check_every, "max_steps": 10}
    assume(not predict([["a"], ["b"]], batches, **settings_).tight)  # type: ignore[arg-type]
    expected = run_and_compare([["a"], ["b"]], batches, **settings_)
    event("reopened" if expected.reopened else "not reopened")
