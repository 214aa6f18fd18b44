"""Deciding, after each batch, which measured layers have converged.

A group of layers sharing one input (a *leader* and its followers) has converged when each of its top
``r`` components has absolute cosine similarity >= tau with the same component at the previous check,
where ``r`` is the largest rank the current allocation gives any member (at least 1). A converged group
stops being measured; if a later allocation gives it more rank than it converged with, it is measured
again (as peft does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import EvaConfig
from .errors import NonFiniteActivationError
from .ranks import allocate_ranks, component_scores
from .svd import InputStatistics, Spectrum

__all__ = ["ConvergenceTracker", "GroupProgress"]

_SPECTRUM_FIELDS = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


@dataclass
class GroupProgress:
    """The convergence record of one leader's group."""

    spectrum: Spectrum | None = None
    previous: torch.Tensor | None = None  # (k, d_in) components at the check before
    converged_at: int | None = None  # batches consumed when it converged
    converged_rank: int = 0
    need: int | None = None  # components the last allocation asked of the group


class ConvergenceTracker:
    """Holds each group's latest spectrum and decides convergence.

    Args:
        config: tau, min_steps, rank budget and caps.
        layer_count: L, the number of targeted layers (the budget is ``rank * L``).
    """

    def __init__(self, config: EvaConfig, layer_count: int) -> None:
        self.config = config
        self.budget = config.rank * layer_count
        self.groups: dict[str, GroupProgress] = {}

    def check(
        self,
        step: int,
        statistics: dict[str, InputStatistics],
        members: dict[str, list[str]],
        active: list[str],
    ) -> tuple[set[str], set[str]]:
        """Update the active groups' spectra after ``step`` batches and return (newly converged leaders,
        converged leaders that must be measured again). ``active`` lists the measured leaders in the
        order they run, so a NaN is reported at the first layer it reaches.

        Raises:
            NonFiniteActivationError: a layer's statistics hold NaN or infinity.
        """
        measured = [leader for leader in active if leader in statistics]
        if measured:
            finite = torch.stack([statistics[leader].is_finite().to("cpu") for leader in measured]).tolist()
            for leader, ok in zip(measured, finite, strict=True):
                if not ok:
                    raise NonFiniteActivationError(
                        f"layer {leader!r} received NaN or infinite inputs by batch {step}; check the data and "
                        "the model's dtype (fp16 overflow is a common cause), or leave this layer out of "
                        "target_modules."
                    )
        for leader in measured:
            stats = statistics[leader]
            progress = self.groups.setdefault(leader, GroupProgress())
            progress.previous = None if progress.spectrum is None else progress.spectrum.components
            k = min(self.config.max_components, stats.dim)
            accurate = None if progress.need is None else progress.need + 2  # a margin for a growing allocation
            progress.spectrum = stats.top(k, previous=progress.previous, accurate=accurate)
        ranks = self.group_ranks(members)
        converged, reopened = set(), set()
        for leader, progress in self.groups.items():
            need = max(1, ranks.get(leader, 0))
            progress.need = need
            if leader in measured:
                if step >= self.config.min_steps and self._stable(progress, need):
                    progress.converged_at, progress.converged_rank = step, need
                    converged.add(leader)
            elif progress.converged_at is not None and need > progress.converged_rank:
                progress.converged_at = None
                reopened.add(leader)
        return converged, reopened

    def progress_state(self) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
        """Every group's record as (JSON-ready fields, tensors keyed ``leader/what``), for checkpoints."""
        fields: dict[str, object] = {}
        tensors: dict[str, torch.Tensor] = {}
        for leader, progress in self.groups.items():
            fields[leader] = {
                "converged_at": progress.converged_at,
                "converged_rank": progress.converged_rank,
                "need": progress.need,
                "rows": None if progress.spectrum is None else progress.spectrum.rows,
            }
            if progress.spectrum is not None:
                for key in _SPECTRUM_FIELDS:
                    tensors[f"{leader}/spectrum.{key}"] = getattr(progress.spectrum, key)
            if progress.previous is not None:
                tensors[f"{leader}/previous"] = progress.previous
        return fields, tensors

    def restore_progress(self, fields: dict[str, dict[str, object]], tensors: dict[str, torch.Tensor]) -> None:
        """Put back what :meth:`progress_state` returned."""
        self.groups = {}
        for leader, info in fields.items():
            spectrum = None
            if info["rows"] is not None:
                parts = {key: tensors[f"{leader}/spectrum.{key}"] for key in _SPECTRUM_FIELDS}
                spectrum = Spectrum(**parts, rows=int(info["rows"]))  # type: ignore[call-overload]
            converged_at, need = info["converged_at"], info["need"]
            self.groups[leader] = GroupProgress(
                spectrum=spectrum,
                previous=tensors.get(f"{leader}/previous"),
                converged_at=None if converged_at is None else int(converged_at),  # type: ignore[call-overload]
                converged_rank=int(info["converged_rank"]),  # type: ignore[call-overload]
                need=None if need is None else int(need),  # type: ignore[call-overload]
            )

    def group_ranks(self, members: dict[str, list[str]]) -> dict[str, int]:
        """leader -> the largest rank the current spectra would give any member of its group."""
        scores: dict[str, torch.Tensor] = {}
        owner: dict[str, str] = {}
        for leader, names in members.items():
            progress = self.groups.get(leader)
            if progress is None or progress.spectrum is None:
                continue
            for name in names:
                scores[name] = component_scores(
                    progress.spectrum.explained_variance,
                    progress.spectrum.explained_variance_ratio,
                    self.config.redistribution,
                )
                owner[name] = leader
        ranks = allocate_ranks(scores, self.budget, caps=dict.fromkeys(scores, self.config.max_components))
        result: dict[str, int] = {}
        for name, rank in ranks.items():
            result[owner[name]] = max(result.get(owner[name], 0), rank)
        return result

    def _stable(self, progress: GroupProgress, need: int) -> bool:
        if progress.spectrum is None or progress.previous is None:
            return False
        now = progress.spectrum.components[:need]
        then = progress.previous[:need]
        if now.shape[0] < need or then.shape[0] < need:
            return False
        cosine = torch.nn.functional.cosine_similarity(now, then, dim=1).abs()  # (need,)
        return bool((cosine >= self.config.tau).all().item())
