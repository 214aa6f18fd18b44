"""The converged protocol: per task, how long a run is, what it is scored on, and what is tuned.

Every (task, method) is tuned on a validation split carved from the task's training data: seed 0 runs at
each learning rate of the task's grid, the best by validation score picks the learning rate, then the
method's own key setting (EVA: ``rho``) is tried at that rate; seeds 1-4 run the chosen configuration.
The held-out split is scored once, after the last step of each run, and read only for the final tables.
Seeds are paired: seed ``s`` draws the same head, data order and windows for every method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["KEY_SETTINGS", "METHODS", "PROTOCOLS", "SEEDS", "TaskProtocol", "get_protocol"]

METHODS: tuple[str, ...] = ("lora", "dora", "pissa", "olora", "loraga", "eva", "eva_dora")
"""The methods of the converged report (the short report keeps the others)."""

SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
"""Seed 0 tunes; all five are the final runs (seed 0's at the chosen configuration included)."""

KEY_SETTINGS: Mapping[str, tuple[Mapping[str, Any], ...]] = {
    "eva": ({"rho": 1},),
    "eva_dora": ({"rho": 1},),
}
"""Alternatives to each method's default key setting, tried at its best learning rate (EVA's ``rho``: 2 by
default, 1 = no redistribution). Methods not named have no key setting here."""


@dataclass(frozen=True)
class TaskProtocol:
    """One task's converged runs.

    Attributes:
        name: the task's key (``sst2``); ``label``: its name in tables (``SST-2``).
        domain: the harness domain (``nlu``, ``vision``, ``rl``, ``llm``); ``model``: its model alias.
        metric: the headline metric; ``higher_is_better``: its direction.
        steps: optimizer steps of every run; ``eval_every``: validation scores every this many steps.
        lr_grid: the peak learning rates tried per method (at least 3).
        flat_threshold: the largest change of the best method's mean validation score over the last
            quarter of steps that still counts as flattened (absolute, in the metric's unit).
        finetune: keyword arguments of the domain's ``finetune`` (batch size, sizes of the training,
            validation and held-out splits, sequence lengths), the same for every run.
        cpu_minutes: expected CPU minutes of one run (orders the work; predicts the budget until a run is cached).
    """

    name: str
    label: str
    domain: str
    model: str
    metric: str
    higher_is_better: bool
    steps: int
    eval_every: int
    lr_grid: tuple[float, ...]
    flat_threshold: float
    finetune: Mapping[str, Any] = field(default_factory=dict)
    cpu_minutes: float = 1.0

    def __post_init__(self) -> None:
        if len(self.lr_grid) < 3 or self.steps % self.eval_every:
            raise ValueError(f"{self.name}: needs >= 3 learning rates and steps a multiple of eval_every.")

    @property
    def eval_at(self) -> tuple[int, ...]:
        """Validation steps: 0, then every ``eval_every``."""
        return tuple(range(0, self.steps + 1, self.eval_every))

    def settings(self) -> dict[str, Any]:
        """What a run record keeps to be recognised as this protocol's (cost estimate excluded)."""
        return {k: v for k, v in asdict(self).items() if k not in ("label", "cpu_minutes")}


PROTOCOLS: tuple[TaskProtocol, ...] = (
    TaskProtocol(
        "fmnist59", "F-MNIST 5-9", "vision", "dinov2-local", "accuracy", True, steps=400, eval_every=50,
        lr_grid=(1.5e-3, 4e-3, 1e-2), flat_threshold=0.01, cpu_minutes=1.5,
        finetune={"task": "fmnist-5-9", "batch_size": 32, "train_limit": 4000, "validation": 400, "dev_limit": 2000},
    ),
    TaskProtocol(
        "digits", "Digits", "vision", "dinov2-local", "accuracy", True, steps=300, eval_every=50,
        lr_grid=(1.5e-3, 4e-3, 1e-2), flat_threshold=0.01, cpu_minutes=1.1,
        finetune={"task": "digits", "batch_size": 32, "validation": 258},
    ),
    TaskProtocol(
        "walker2d", "Walker2d", "rl", "dt-halfcheetah", "normalized_return", True, steps=300, eval_every=75,
        lr_grid=(3e-4, 1e-3, 3e-3), flat_threshold=3.0, cpu_minutes=1.0,
        finetune={
            "task": "walker2d", "batch_size": 32, "validation": 16, "dev_limit": 16, "episodes": 4,
            "held_out_episodes": 10,
        },
    ),
    TaskProtocol(
        "sst2", "SST-2", "nlu", "minilm", "accuracy", True, steps=120, eval_every=20,
        lr_grid=(5e-4, 1.5e-3, 4e-3), flat_threshold=0.01, cpu_minutes=1.8,
        finetune={"task": "sst2", "batch_size": 16, "max_length": 64, "train_limit": 4000, "validation": 256},
    ),
    TaskProtocol(
        "mrpc", "MRPC", "nlu", "minilm", "f1", True, steps=160, eval_every=40,
        lr_grid=(1e-3, 3e-3, 8e-3), flat_threshold=0.01, cpu_minutes=2.7,
        finetune={"task": "mrpc", "batch_size": 16, "max_length": 64, "validation": 200, "dev_limit": 600},
    ),
    TaskProtocol(
        "gsm8k", "GSM8K", "llm", "smollm2", "loss", False, steps=80, eval_every=20,
        lr_grid=(2e-4, 6e-4, 2e-3), flat_threshold=0.01, cpu_minutes=3.5,
        finetune={
            "batch_size": 1, "max_length": 160, "train_problems": 1024, "validation": 16, "eval_problems": 64,
            "generate_problems": 16, "max_new_tokens": 128, "metric": "loss",
        },
    ),
)  # fmt: skip
"""The six tasks, cheapest first."""


def get_protocol(name: str) -> TaskProtocol:
    """The protocol of task ``name``.

    Raises:
        KeyError: an unknown name (the message lists the known ones).
    """
    for protocol in PROTOCOLS:
        if protocol.name == name:
            return protocol
    raise KeyError(f"task={name!r} has no converged protocol; pick one of {[p.name for p in PROTOCOLS]}.")
