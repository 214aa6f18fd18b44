"""The whole fit against peft's own EVA and the exact SVD, on real MiniLM weights and real sentences."""

from __future__ import annotations

import pytest
import torch
from minilm import BLOCK_LINEARS, load_minilm, sentence_batches, sst2_sentences

import eva_core
import eva_core.ranks

peft = pytest.importorskip("peft")
from peft.tuners.lora.eva import get_eva_state_dict  # noqa: E402

RANK = 4


@pytest.fixture(scope="module")
def setting():  # type: ignore[no-untyped-def]
    model, tokenizer = load_minilm()
    model.eval()
    # two batches: with tau=0 both implementations stop after exactly two, so they see the same rows
    batches = sentence_batches(tokenizer, sst2_sentences(96), batch_size=48)
    return model, batches


def exact_components(model, batches, names, k):  # type: ignore[no-untyped-def]
    """name -> (k, d_in) top right-singular vectors of all unmasked, centered input rows, float64."""
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    modules = dict(model.named_modules())
    mask: list[torch.Tensor] = []
    handles = [
        modules[name].register_forward_pre_hook(
            lambda _m, args, name=name: rows[name].append(args[0].reshape(-1, args[0].shape[-1])[mask[0].reshape(-1)])
        )
        for name in names
    ]
    try:
        with torch.no_grad():
            for batch in batches:
                mask[:] = [batch["attention_mask"].bool()]
                model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    result = {}
    for name, chunks in rows.items():
        x = torch.cat(chunks).double()
        x = x - x.mean(dim=0)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        result[name] = (vh[:k], s)
    return result


def separated(singular_values: torch.Tensor, i: int, gap: float = 0.02) -> bool:
    """Whether component ``i`` is well separated from its neighbours (relative gap >= ``gap``)."""
    s = singular_values
    left = i == 0 or (s[i - 1] - s[i]) / s[i - 1] >= gap
    return bool(left and (s[i] - s[i + 1]) / s[i] >= gap)


def _exact_fit(model, batches):  # type: ignore[no-untyped-def]
    """The exact path everywhere: at rank 4 the default statistics="auto" sketches the 1536-wide inputs, whose
    Gram update costs 8x the sketch's (test_planning.py tests that choice; the sketch's accuracy is measured
    apart)."""
    return eva_core.fit(
        model, batches, rank=RANK, tau=0.0, min_steps=2, target_modules=BLOCK_LINEARS, progress=False,
        statistics="exact",
    )  # fmt: skip


def test_matches_peft_and_exact_svd(setting) -> None:  # type: ignore[no-untyped-def]
    model, batches = setting
    state = _exact_fit(model, batches)
    assert state.steps == 2
    config = peft.LoraConfig(
        r=RANK, target_modules=BLOCK_LINEARS, init_lora_weights="eva", eva_config=peft.EvaConfig(rho=2.0, tau=0.0)
    )
    theirs = get_eva_state_dict(model, batches, peft_config=config, show_progress_bar=False)
    assert set(theirs) == set(state.ranks)

    exact = exact_components(model, batches, list(state.ranks), 2 * RANK)
    ours_err, theirs_err, agreed = [], [], 0
    for name, (reference, s) in exact.items():
        ours = state.components(name).double()
        for i in range(min(state.ranks[name], theirs[name].shape[0])):
            if not separated(s, i, gap=0.02):
                continue
            cos_ours = torch.dot(ours[i], reference[i]).abs()
            cos_theirs = torch.nn.functional.cosine_similarity(theirs[name][i].double(), reference[i], dim=0).abs()
            assert cos_ours >= 0.9999, (name, i, float(cos_ours))
            ours_err.append(1 - cos_ours)
            theirs_err.append(1 - cos_theirs)
            if separated(s, i, gap=0.2):  # peft's randomized low-rank SVD drifts where gaps are smaller
                cos_both = torch.nn.functional.cosine_similarity(theirs[name][i].double(), ours[i], dim=0).abs()
                assert cos_both >= 0.99, (name, i, float(cos_both))
                agreed += 1
    assert len(ours_err) >= 50 and agreed >= 20, (len(ours_err), agreed)
    # at least as close to the exact SVD as peft's randomized incremental PCA
    assert torch.stack(ours_err).mean() <= torch.stack(theirs_err).mean()

    their_ranks = {name: value.shape[0] for name, value in theirs.items()}
    assert sum(their_ranks.values()) == sum(state.ranks.values()) == RANK * len(state.ranks)
    moved = sum(abs(their_ranks[n] - state.ranks[n]) for n in state.ranks)
    assert moved <= 0.05 * sum(state.ranks.values()), (their_ranks, state.ranks)


def test_ranks_follow_exact_explained_variance(setting) -> None:  # type: ignore[no-untyped-def]
    model, batches = setting
    state = _exact_fit(model, batches)
    exact = exact_components(model, batches, list(state.ranks), 2 * RANK)
    ratios = {name: (s[: 2 * RANK] ** 2) / (s**2).sum() for name, (_, s) in exact.items()}
    assert eva_core.ranks.allocate_ranks(ratios, RANK * len(ratios)) == state.ranks
