"""EVA for ``nn.Embedding`` targets: the statistic is the token counts of the (masked) batches.

Every spectrum is checked against the SVD of the explicit one-hot rows (small V, float64); the fit, apply,
save/load, checkpoints and a two-process gloo fit go through the tiny model of ``conftest``; a 100k-token
embedding shows that nothing (V, V) is ever formed.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from conftest import VOCAB, tiny_model, token_batches
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from torch import nn

from eva_core import EvaState, fit, hookimpl, plugin_manager
from eva_core.capture import embedding_rows, embedding_rows_for, input_width, token_rows
from eva_core.plugins.generic import token_mask
from eva_core.svd import CountStatistics
from eva_core.svd.counts import count_eigenpairs

HERE = Path(__file__).resolve()
SETTINGS = {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": 6, "max_steps": 6, "progress": False}
TARGETS = ["embed", "q", "up"]


def one_hot_scatter(ids: torch.Tensor, vocab: int, centered: bool) -> torch.Tensor:
    """(V, V) float64 scatter of the explicit one-hot rows of ``ids`` (N,): the reference."""
    rows = torch.nn.functional.one_hot(ids, vocab).double()  # (N, V)
    if centered:
        rows = rows - rows.mean(dim=0)
    return rows.T @ rows


def reference_pairs(scatter: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = torch.linalg.eigh(scatter)
    return values.flip(0)[:k], vectors.flip(1)[:, :k].T  # (k,), (k, V)


def assert_same_subspaces(vectors: torch.Tensor, scatter: torch.Tensor, atol: float = 1e-9) -> None:
    """The span of the top-r rows of ``vectors`` (k, V) equals that of the top-r eigenvectors of ``scatter``
    (V, V) for every r that ends at an eigenvalue gap (within a tie the individual vectors are arbitrary)."""
    values, reference = reference_pairs(scatter, scatter.shape[0])
    for r in range(1, vectors.shape[0] + 1):
        if r < len(values) and values[r - 1] - values[r] < 1e-6:
            continue
        mine, theirs = vectors[:r].T @ vectors[:r], reference[:r].T @ reference[:r]  # (V, V) projectors
        torch.testing.assert_close(mine, theirs, rtol=0, atol=atol)


@settings(max_examples=100)
@given(
    vocab=st.integers(1, 24),
    ids=st.lists(st.integers(0, 23), min_size=1, max_size=60),
    keep=st.lists(st.booleans(), min_size=60, max_size=60),
    centered=st.booleans(),
    k=st.integers(1, 30),
)
def test_counts_equal_the_svd_of_the_one_hot_rows(vocab, ids, keep, centered, k) -> None:
    """Eigenvalues, explained-variance ratios, singular values and top subspaces of the masked one-hot rows."""
    tokens = torch.tensor(ids) % vocab  # (N,)
    mask = torch.tensor(keep[: len(ids)])  # (N,)
    stats = CountStatistics(vocab, "cpu", centered=centered)
    rows, rows_mask = embedding_rows(tokens[None], mask[None], num_embeddings=vocab)  # (1, N) ids, (1, N) mask
    stats.update(rows, rows_mask)
    kept = tokens[mask]
    assert int(stats.rows_seen()) == kept.numel()
    if kept.numel() == 0:
        return
    scatter = one_hot_scatter(kept, vocab, centered)
    values, _ = reference_pairs(scatter, min(k, vocab))
    mine, my_vectors = count_eigenpairs(stats.counts, k, centered)
    torch.testing.assert_close(mine, values.clamp_min(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(my_vectors @ my_vectors.T, torch.eye(len(mine), dtype=torch.float64), rtol=0, atol=1e-12)
    assert_same_subspaces(my_vectors, scatter)
    spectrum = stats.top(k)
    one_hot = torch.nn.functional.one_hot(kept, vocab).double()  # (N', V)
    singular = torch.linalg.svdvals(one_hot - one_hot.mean(dim=0) if centered else one_hot)
    singular = torch.cat([singular, singular.new_zeros(vocab)])[: len(mine)]  # min(N', V) of them, then zeros
    torch.testing.assert_close(spectrum.singular_values.double(), singular, rtol=1e-5, atol=1e-5)
    trace = scatter.trace()
    if trace > 0:
        torch.testing.assert_close(
            spectrum.explained_variance_ratio.double(), values.clamp_min(0) / trace, rtol=1e-5, atol=1e-7
        )


@pytest.mark.parametrize("centered", [True, False])
def test_distinct_counts_give_the_reference_vectors(centered) -> None:
    """With every count distinct each vector is determined up to sign; here large counts (n ~ 1e6) and
    single tokens side by side test the secular solve's accuracy."""
    counts = torch.tensor([5e5, 1.0, 3e5, 0.0, 2.0, 2e5 + 7, 3.0, 11.0], dtype=torch.float64)
    n = counts.sum()
    scatter = torch.diag(counts) - (torch.outer(counts, counts) / n if centered else 0.0)
    values, vectors = reference_pairs(scatter, 6)
    mine, my_vectors = count_eigenpairs(counts, 6, centered)
    torch.testing.assert_close(mine, values, rtol=1e-12, atol=1e-9)
    signs = torch.sign((my_vectors * vectors).sum(dim=1, keepdim=True))
    torch.testing.assert_close(my_vectors * signs, vectors, rtol=0, atol=1e-10)
    residual = my_vectors @ scatter - mine[:, None] * my_vectors  # C v = lambda v, row by row
    assert residual.abs().max() < 1e-7


@settings(max_examples=200)
@given(
    counts=st.lists(st.one_of(st.integers(0, 5), st.integers(0, 10**7)), min_size=1, max_size=40),
    centered=st.booleans(),
    k=st.integers(1, 45),
)
@example(counts=[2, 4999994], centered=True, k=2)  # one dominant token: 1 - sum w/(d - lambda) cancels
def test_eigenpairs_hold_to_float64_precision(counts, centered, k) -> None:
    """Large and small counts side by side: eigenvalues and residuals to ~1e-15 of the largest count, and
    orthonormal vectors to ~1e-15 (the secular solve must not lose digits to cancellation)."""
    c = torch.tensor(counts, dtype=torch.float64)
    assume(c.sum() > 0)
    scatter = torch.diag(c) - (torch.outer(c, c) / c.sum() if centered else 0.0)
    values, vectors = count_eigenpairs(c, k, centered)
    scale = float(c.max())
    reference = torch.linalg.eigvalsh(scatter).flip(0)[: len(values)]
    assert (values - reference).abs().max() / scale < 1e-13
    assert (vectors @ scatter - values[:, None] * vectors).abs().max() / scale < 1e-13
    assert (vectors @ vectors.T - torch.eye(len(values), dtype=torch.float64)).abs().max() < 1e-13


def test_dense_rows_are_refused() -> None:
    with pytest.raises(TypeError, match="sparse one-hot rows"):
        CountStatistics(4, "cpu").update(torch.eye(4))


def masked_ids(batches: list[dict]) -> torch.Tensor:
    """The ids the fit must count: attention_mask 1 and label not -100."""
    return torch.cat([batch["input_ids"][token_mask(batch)] for batch in batches])


@pytest.fixture(scope="module")
def embedding_fit() -> EvaState:
    torch.set_num_threads(1)
    os.environ.setdefault("EVA_DISABLE_PLUGINS", "*")
    return fit(tiny_model(0).eval(), token_batches(6), target_modules=TARGETS, **SETTINGS)


def test_fit_measures_the_masked_token_counts(embedding_fit) -> None:
    layer = embedding_fit.layers["embed"]
    ids = masked_ids(token_batches(6))
    assert layer.rows == ids.numel()
    assert layer.components.shape == (8, VOCAB)
    scatter = one_hot_scatter(ids, VOCAB, centered=True)
    values, _ = reference_pairs(scatter, 8)
    torch.testing.assert_close(layer.singular_values.double() ** 2, values, rtol=1e-5, atol=1e-4)
    assert_same_subspaces(layer.components.double(), scatter, atol=1e-6)  # float32 components
    assert embedding_fit.ranks["embed"] >= 0
    assert sum(embedding_fit.ranks.values()) <= 4 * 5


def test_apply_puts_the_components_in_lora_embedding_a(embedding_fit, tmp_path) -> None:
    model = tiny_model(0).eval()
    batch = token_batches(1, seed=9)[0]
    with torch.no_grad():
        reference = model(batch["input_ids"], batch["attention_mask"])
    state = embedding_fit
    assert state.ranks["embed"] >= 1
    state.save(tmp_path / "state")
    loaded = EvaState.load(tmp_path / "state")
    assert loaded.ranks == state.ranks
    torch.testing.assert_close(loaded.layers["embed"].components, state.layers["embed"].components, rtol=0, atol=0)
    from eva_core import apply

    peft_model = apply(model, loaded)
    layer = dict(peft_model.get_base_model().named_modules())["embed"]
    assert layer.lora_embedding_A["default"].shape == (state.ranks["embed"], VOCAB)  # peft: (r, num_embeddings)
    assert torch.equal(layer.lora_embedding_A["default"], loaded.components("embed"))
    assert not layer.lora_embedding_B["default"].any()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(batch["input_ids"], batch["attention_mask"]), reference, rtol=0, atol=0)
    with torch.no_grad():  # with B set, the adapter adds onehot(ids) A^T B^T: A's rows read token counts
        layer.lora_embedding_B["default"].fill_(1.0)
        hidden = layer(batch["input_ids"]) - layer.base_layer(batch["input_ids"])
    expected = loaded.components("embed").T[batch["input_ids"]].sum(dim=-1, keepdim=True) * layer.scaling["default"]
    torch.testing.assert_close(hidden, expected.expand_as(hidden))


class DenseOneHotRows:
    """A plugin that gives the embedding dense one-hot rows: those go to the Gram statistics, not to counts."""

    @hookimpl
    def eva_layer_rows(self, name, module):
        if not isinstance(module, nn.Embedding):
            return None

        def rows(layer_input: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
            one_hot = torch.nn.functional.one_hot(layer_input, module.num_embeddings).float()  # (B, T, V)
            return token_rows(one_hot, mask)

        return rows


@pytest.mark.parametrize("centered", [True, False])
def test_counts_agree_with_the_gram_statistics_of_dense_one_hot_rows(centered) -> None:
    """The same fit twice: token counts (the generic rows) and the exact Gram engine fed dense one-hot rows
    by a plugin. Ratios agree, and so do the spans of the top components at every eigenvalue gap."""
    manager = plugin_manager(load_entry_points=False)
    manager.register(DenseOneHotRows(), "dense")
    settings_ = {**SETTINGS, "centered": centered}
    counted = fit(tiny_model(0).eval(), token_batches(6), target_modules=["embed"], **settings_)
    dense = fit(tiny_model(0).eval(), token_batches(6), target_modules=["embed"], plugins=manager, **settings_)
    mine, gram = counted.layers["embed"], dense.layers["embed"]
    assert mine.rows == gram.rows
    torch.testing.assert_close(mine.explained_variance_ratio, gram.explained_variance_ratio, rtol=1e-4, atol=1e-6)
    values = mine.singular_values.double() ** 2
    for r in range(1, len(values)):
        if values[r - 1] - values[r] > 1e-3:
            projector = mine.components[:r].T @ mine.components[:r]  # (V, V)
            torch.testing.assert_close(projector, gram.components[:r].T @ gram.components[:r], rtol=0, atol=1e-4)


def test_uncentered_components_are_the_most_frequent_tokens() -> None:
    batches = token_batches(6)
    state = fit(tiny_model(0).eval(), batches, target_modules=["embed"], centered=False, **SETTINGS)
    counts = torch.bincount(masked_ids(batches), minlength=VOCAB).double()
    components = state.layers["embed"].components
    assert torch.equal(components.abs().sum(dim=1), torch.ones(len(components)))  # unit vectors
    assert torch.equal(counts[components.argmax(dim=1)], counts.sort(descending=True).values[: len(components)])


def test_repeated_batches_converge(make_batches) -> None:
    """The same batch over and over scales the counts: the components stay put, so tau=0.99 converges."""
    batch = make_batches(1)[0]
    settings_ = {**SETTINGS, "tau": 0.99, "min_steps": 2, "max_steps": 20}
    state = fit(tiny_model(0).eval(), [batch] * 20, target_modules=["embed"], **settings_)
    assert state.layers["embed"].converged
    assert state.steps == 2


def test_a_resumed_fit_equals_an_uninterrupted_one(tmp_path, embedding_fit) -> None:
    class Breaking:
        def __init__(self, batches: list[dict]) -> None:
            self.batches = batches

        def __iter__(self):  # type: ignore[no-untyped-def]
            for i, batch in enumerate(self.batches):
                if i == 4:
                    raise RuntimeError("interrupted")
                yield batch

    checkpoints = {"checkpoint_dir": tmp_path, "checkpoint_every": 2}
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(tiny_model(0).eval(), Breaking(token_batches(6)), target_modules=TARGETS, **checkpoints, **SETTINGS)
    state = fit(tiny_model(0).eval(), token_batches(6), target_modules=TARGETS, resume=True, **checkpoints, **SETTINGS)
    assert state.ranks == embedding_fit.ranks
    for name, layer in embedding_fit.layers.items():
        torch.testing.assert_close(state.layers[name].components, layer.components, rtol=0, atol=1e-5)


def test_embedding_width_and_rows_function() -> None:
    embedding = nn.Embedding(100, 4)
    assert input_width(embedding) == 100
    first, second = embedding_rows_for(embedding), embedding_rows_for(embedding)
    assert first is not second  # never grouped with another embedding fed the same ids
    rows, mask = first(torch.tensor([[3, 5], [7, 3]]), torch.tensor([[True, False], [True, True]]))
    assert rows.shape == (4, 100) and rows.layout == torch.sparse_coo
    assert torch.equal(rows.to_dense().argmax(dim=1), torch.tensor([3, 5, 7, 3]))
    assert torch.equal(mask, torch.tensor([True, False, True, True]))


def test_a_transformers_model_with_its_word_embeddings_targeted() -> None:
    """A tiny random BERT through the generic path: the word embeddings' components are those of the token
    counts where attention_mask is 1, and the peft model's output at step 0 is the base model's."""
    from transformers import BertConfig, BertModel

    from eva_core import apply

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    batches = [{key: value for key, value in batch.items() if key != "labels"} for batch in token_batches(4)]
    for batch in batches:
        batch["input_ids"] = batch["input_ids"] % 50
    targets = ["word_embeddings", "query"]
    state = fit(model, batches, target_modules=targets, **{**SETTINGS, "min_steps": 4, "max_steps": 4})
    ids = torch.cat([batch["input_ids"][batch["attention_mask"] == 1] for batch in batches])
    assert_same_subspaces(
        state.layers["embeddings.word_embeddings"].components.double(),
        one_hot_scatter(ids, 50, centered=True),
        atol=1e-6,
    )
    with torch.no_grad():
        reference = model(**batches[0]).last_hidden_state
    assert state.ranks["embeddings.word_embeddings"] >= 1
    peft_model = apply(model, state)
    layer = peft_model.get_base_model().embeddings.word_embeddings
    assert torch.equal(layer.lora_embedding_A["default"], state.components("embeddings.word_embeddings"))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**batches[0]).last_hidden_state, reference, rtol=0, atol=0)


def test_shared_counts_round_trip_through_a_checkpoint() -> None:
    """The distributed wrapper's state (this rank's fresh counts and the agreed totals) restores exactly."""
    from eva_core.fitting.shared import SharedCounts

    shared = SharedCounts(CountStatistics(10, "cpu"), CountStatistics(10, "cpu"))
    rows, _ = embedding_rows(torch.tensor([[1, 2, 2]]), None, num_embeddings=10)
    shared.update(rows)
    shared.total.add(torch.arange(10, dtype=torch.float64))
    restored = SharedCounts(CountStatistics(10, "cpu"), CountStatistics(10, "cpu"))
    restored.load_state_dict({key: value.clone() for key, value in shared.state_dict().items()})
    assert torch.equal(restored.local.counts, shared.local.counts)
    assert torch.equal(restored.total.counts, shared.total.counts)
    assert int(restored.rows_seen()) == 45
    assert torch.equal(restored.top(3).components, shared.top(3).components)


class WideVocab(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.out = nn.Linear(8, 8)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(input_ids))


def test_a_hundred_thousand_token_embedding_needs_no_v_by_v_matrix() -> None:
    """V = 100_000: a (V, V) float32 matrix would be 40 GB (and the gram budget would send the layer to a
    dense sketch); token counts take 800 kB. The fit must finish fast and barely move the peak memory."""
    vocab = 100_000
    torch.manual_seed(0)
    model = WideVocab(vocab).eval()
    generator = torch.Generator().manual_seed(0)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    batches = [torch.multinomial(zipf, 8 * 64, replacement=True, generator=generator).view(8, 64) for _ in range(4)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    started = time.perf_counter()
    state = fit(
        model, batches, target_modules=["embed"], rank=8, rho=2.0, tau=0.0, min_steps=4, max_steps=4, progress=False
    )
    seconds = time.perf_counter() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert state.layers["embed"].components.shape == (16, vocab)
    assert state.layers["embed"].components[0].argmax() == 0  # token 0 is the most frequent
    assert seconds < 20, seconds
    assert grown_mb < 300, grown_mb


# two processes ------------------------------------------------------------------------------------------
def _worker(rank: int, world: int, port: int, out: Path) -> int:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=30)
    )
    try:
        batches = token_batches(6)[rank::world]
        state = fit(
            tiny_model(0).eval(), batches, target_modules=TARGETS, **{**SETTINGS, "min_steps": 3, "max_steps": 3}
        )
        state.save(out / f"rank{rank}")
    finally:
        dist.destroy_process_group()
    return 0


def test_two_gloo_ranks_equal_one_process(tmp_path, embedding_fit) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EVA_DISABLE_PLUGINS": "*"}
    command = [sys.executable, str(HERE), str(port), str(tmp_path)]
    procs = [subprocess.Popen([*command, str(rank)], env=env, cwd=HERE.parent) for rank in range(2)]
    try:
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert codes == [0, 0]
    for rank in range(2):
        state = EvaState.load(tmp_path / f"rank{rank}")
        assert state.ranks == embedding_fit.ranks
        layer, reference = state.layers["embed"], embedding_fit.layers["embed"]
        assert layer.rows == reference.rows
        torch.testing.assert_close(layer.components, reference.components, rtol=0, atol=0)
        torch.testing.assert_close(layer.explained_variance_ratio, reference.explained_variance_ratio)


if __name__ == "__main__":
    port_, out_, rank_ = sys.argv[1:]
    sys.exit(_worker(int(rank_), 2, int(port_), Path(out_)))
