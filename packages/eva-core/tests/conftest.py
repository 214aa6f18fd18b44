"""Shared fixtures of the eva-core unit tests: a tiny random transformer-like model and its batches.

The model exists only to exercise mechanics (hooks, grouping, masking, early stop); it is small enough
that a fit takes milliseconds on one CPU thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, settings
from torch import nn

from eva_core.plugins.manager import DISABLE_ENV

torch.set_num_threads(1)

# Property-based tests: reproducible (derandomized, no example database written into the tree), no deadline
# (2 shared CI cores are noisy). `HYPOTHESIS_PROFILE=hunt` draws fresh random cases on each run (2000 where a test
# does not set its own max_examples), for looking for bugs beyond the fixed CI sample.
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("hunt", parent=settings.get_profile("ci"), derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _core_plugins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """eva-core is tested alone: domain packages installed beside it (a dev environment) stay out."""
    monkeypatch.setenv(DISABLE_ENV, "*")


VOCAB, WIDTH, HIDDEN = 64, 16, 32


class Block(nn.Module):
    """Single-head attention (q, k, v fed the same tensor, then o) and an MLP (up, down), both residual."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.o = nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)  # (B, T, d)
        logits = q @ k.transpose(1, 2) / q.shape[-1] ** 0.5  # (B, T, T)
        if attention_mask is not None:
            logits = logits.masked_fill(attention_mask[:, None, :] == 0, -1e4)
        x = x + self.drop(self.o(logits.softmax(-1) @ v))
        return x + self.down(torch.relu(self.up(x)))


class TinyModel(nn.Module):
    """embedding -> two blocks -> head. Embedding columns are scaled by a log-spaced profile, so every
    layer input has a decaying spectrum whose top components are well separated."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        with torch.no_grad():
            self.embed.weight.mul_(torch.logspace(0, -2, WIDTH))
        self.blocks = nn.ModuleList([Block(WIDTH, HIDDEN), Block(WIDTH, HIDDEN)])
        self.head = nn.Linear(WIDTH, VOCAB)
        self.register_buffer("position", torch.linspace(0, 1, WIDTH))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(input_ids) + 0.0 * self.position  # (B, T, d)
        for block in self.blocks:
            x = block(x, attention_mask)
        return self.head(x)  # (B, T, V)


def tiny_model(seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel()


def token_batches(count: int, seed: int = 1, size: int = 4, length: int = 10, masked: bool = True) -> list[dict]:
    """``count`` dict batches of ``input_ids`` (B, T); when ``masked``, each carries an attention_mask
    with right padding and labels with -100 on the first tokens."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, VOCAB, (size, length), generator=generator)
        batch = {"input_ids": ids}
        if masked:
            lengths = torch.randint(length // 2, length + 1, (size,), generator=generator)
            attention = (torch.arange(length)[None, :] < lengths[:, None]).long()  # (B, T)
            labels = ids.masked_fill(attention == 0, -100)
            labels[:, :2] = -100
            batch.update(attention_mask=attention, labels=labels)
        batches.append(batch)
    return batches


@pytest.fixture
def make_model() -> Callable[..., TinyModel]:
    """Factory of fresh tiny models; the same seed gives the same weights."""
    return tiny_model


@pytest.fixture
def make_batches() -> Callable[..., list[dict]]:
    return token_batches


@pytest.fixture
def model() -> TinyModel:
    return tiny_model(0)


@pytest.fixture
def batches() -> list[dict]:
    return token_batches(6)


@pytest.fixture
def exact_fit_settings() -> dict:
    """Settings under which every layer sees every batch: tau=0 converges all layers at exactly
    min_steps = max_steps = 6, so no warning is raised and the rows are deterministic."""
    return {"rank": 4, "rho": 2.0, "tau": 0.0, "min_steps": 6, "max_steps": 6, "progress": False}


def decaying_rows(
    n: int, dim: int, seed: int = 0, offset: float = 0.0, decay: float = 0.5, floor: float = 1e-3
) -> torch.Tensor:
    """(n, dim) float32 rows with a geometric spectrum (std ``decay**i``, floored) in a random rotated
    basis, plus ``offset`` added to every entry."""
    generator = torch.Generator().manual_seed(seed)
    scales = torch.clamp(decay ** torch.arange(dim, dtype=torch.float64), min=floor)  # (d,)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))  # (d, d)
    rows = torch.randn(n, dim, generator=generator, dtype=torch.float64) * scales  # (n, d)
    return (rows @ rotation.T + offset).float()


@pytest.fixture
def make_rows() -> Callable[..., torch.Tensor]:
    return decaying_rows
