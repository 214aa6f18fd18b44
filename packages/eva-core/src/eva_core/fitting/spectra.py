"""The spectra a fit measures: after each check, which measured layers have converged; at the end, every
layer's exact spectrum and its rank (:func:`final_state`), and the warning naming the layers that had not
converged.

A group of layers sharing one input (a *leader* and its followers) has converged when the stopping rule
(:mod:`eva_core.fitting.stopping`: the estimated subspace error within ``target_error``, or the cosine
rule when ``tau`` is set) accepts its top ``r`` components, where ``r`` is the largest rank the current
allocation gives any member (at least 1). A converged group stops being measured; if a later allocation
gives it more rank than it converged with, it is measured again (as peft does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..capture import input_width
from ..config import EvaConfig
from ..errors import (
    EmptyDataError,
    NonFiniteActivationError,
    NotConvergedWarning,
    NoVarianceError,
    TooFewRowsWarning,
    warn,
)
from ..ranks import allocate_layer_ranks
from ..state import EvaState, LayerSpectrum
from ..svd import InputStatistics, Spectrum
from .stopping import Snapshot, StopRecord, stopping_rule

if TYPE_CHECKING:
    from ..capture import InputRecorder

__all__ = ["ConvergenceTracker", "GroupProgress", "final_state", "warn_not_converged"]

_SPECTRUM_FIELDS = ("components", "singular_values", "explained_variance", "explained_variance_ratio")


@dataclass
class GroupProgress(StopRecord):
    """The convergence record of one leader's group (with what its stopping rule keeps)."""

    spectrum: Spectrum | None = None
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
        self.layer_count = layer_count
        self.rule = stopping_rule(config)
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
                        f"layer {leader!r} received NaN or infinite inputs by batch {step} (values beyond "
                        "float32's range count as infinite); check the data and the model's dtype (fp16 "
                        "overflow is a common cause), or leave this layer out of target_modules."
                    )
        for leader in measured:
            stats = statistics[leader]
            progress = self.groups.setdefault(leader, GroupProgress())
            progress.previous = None if progress.spectrum is None else progress.spectrum.components
            k = min(self.config.max_components, stats.dim)
            accurate = None if progress.need is None else progress.need + 2  # a margin for a growing allocation
            progress.spectrum = with_variance(stats.top(k, previous=progress.previous, accurate=accurate))
            self.rule.observe(progress, progress.spectrum)
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
                "estimate": progress.estimate,
                "snapshot_rows": [snapshot.rows for snapshot in progress.snapshots],
            }
            for index, snapshot in enumerate(progress.snapshots):
                tensors[f"{leader}/snapshot.{index}"] = snapshot.components
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
            snapshot_rows: list[int] = info.get("snapshot_rows", [])  # type: ignore[assignment]
            self.groups[leader] = GroupProgress(
                spectrum=spectrum,
                previous=tensors.get(f"{leader}/previous"),
                converged_at=None if converged_at is None else int(converged_at),  # type: ignore[call-overload]
                converged_rank=int(info["converged_rank"]),  # type: ignore[call-overload]
                need=None if need is None else int(need),  # type: ignore[call-overload]
                estimate=info.get("estimate"),  # type: ignore[arg-type]
                snapshots=[
                    Snapshot(int(rows), tensors[f"{leader}/snapshot.{index}"])
                    for index, rows in enumerate(snapshot_rows)
                ],
            )

    def group_ranks(self, members: dict[str, list[str]]) -> dict[str, int]:
        """leader -> the largest rank the current spectra would give any member of its group (a member
        shares its leader's spectrum; layers not measured yet count towards the budget)."""
        spectra: dict[str, Spectrum] = {}
        owner: dict[str, str] = {}
        for leader, names in members.items():
            progress = self.groups.get(leader)
            if progress is None or progress.spectrum is None:
                continue
            for name in names:
                spectra[name] = progress.spectrum
                owner[name] = leader
        ranks = allocate_layer_ranks(spectra, self.config, layer_count=self.layer_count)
        result: dict[str, int] = {}
        for name, rank in ranks.items():
            result[owner[name]] = max(result.get(owner[name], 0), rank)
        return result

    def _stable(self, progress: GroupProgress, need: int) -> bool:
        return progress.spectrum is not None and self.rule.stopped(progress, progress.spectrum, need)

    def estimated_errors(self, members: dict[str, list[str]]) -> dict[str, float | None]:
        """layer -> its group's estimated subspace error at the last check (``None`` before any estimate)."""
        return {
            name: self.groups[leader].estimate if leader in self.groups else None
            for leader, names in members.items()
            for name in names
        }


def final_state(
    layers: dict[str, nn.Module], recorder: InputRecorder, tracker: ConvergenceTracker, config: EvaConfig, steps: int
) -> EvaState:
    """The state after ``steps`` batches: each layer's exact top components from its group's statistics
    (warm-started from the last convergence check), a layer that never ran at rank 0, ranks allocated.

    Raises:
        EmptyDataError: every row was masked out, or no targeted layer ran.
    """
    unknown = sorted(name for name in recorder.layout_skipped if name not in recorder.layouts)
    square = (
        f" Layers {unknown[:3]} never saw a batch whose size differs from its padded length, so whether their "
        "inputs are (B, T, d) or (T, B, d) could not be told and those batches were left out; use another "
        "batch size."
        if unknown
        else ""
    )
    if not any(int(stats.rows_seen().item()) for stats in recorder.statistics.values()):
        raise EmptyDataError(
            "every row was masked out (attention_mask 0 or labels -100 everywhere) or no targeted layer ran; "
            "check the batches' masks, or pass a different target_modules." + square
        )
    if square:
        warn(square.strip())
    measured = {
        leader: _measured(leader, recorder.statistics[leader], tracker.groups.get(leader), config)
        for leader in recorder.order
    }
    spectra: dict[str, LayerSpectrum] = {}
    for name, module in layers.items():
        leader = recorder.leader_of.get(name)
        if leader is None:
            warn(f"layer {name!r} never ran during the fit; it gets rank 0.", TooFewRowsWarning)
            spectra[name] = _empty(name, input_width(module), rows=0)
        else:  # a follower shares its leader's spectrum
            spectra[name] = measured[leader]
    _check_variance(spectra, config)
    return EvaState(layers=spectra, ranks=allocate_layer_ranks(spectra, config), steps=steps, config=config)


def with_variance(spectrum: Spectrum) -> Spectrum:
    """``spectrum`` without its components of zero variance (numerically none: see
    :func:`eva_core.svd.spectrum.noise_floor`); they come last, and no rank may go to them."""
    alive = int((spectrum.explained_variance > 0).sum().item())
    if alive == spectrum.components.shape[0]:
        return spectrum
    return Spectrum(
        components=spectrum.components[:alive],
        singular_values=spectrum.singular_values[:alive],
        explained_variance=spectrum.explained_variance[:alive],
        explained_variance_ratio=spectrum.explained_variance_ratio[:alive],
        rows=spectrum.rows,
    )


def _check_variance(spectra: dict[str, LayerSpectrum], config: EvaConfig) -> None:
    """Warn once naming the layers whose inputs have no variance (they get rank 0); raise if no layer has any.

    Raises:
        NoVarianceError: no targeted layer's input varies.
    """
    usable = 2 if config.centered else 1
    # rows enough for a component, yet none held: every candidate had zero variance
    flat = [name for name, layer in spectra.items() if layer.rows >= usable and layer.components.shape[0] == 0]
    if any(s.components.shape[0] for s in spectra.values()):
        if flat:
            shown = ", ".join(flat[:5]) + (f" and {len(flat) - 5} more" if len(flat) > 5 else "")
            warn(
                f"the inputs of {len(flat)} layer(s) have no variance ({'constant' if config.centered else 'zero'} "
                f"rows), so they get rank 0 and the budget goes to the other layers: {shown}. Check the data, "
                "or leave them out of target_modules."
            )
        return
    if flat:
        raise NoVarianceError(
            f"no targeted layer's input varies: every row the layers saw is {'the same' if config.centered else 'zero'}"
            f" ({', '.join(flat[:5])}{'...' if len(flat) > 5 else ''}), so EVA has no direction to initialize from. "
            "Check the batches (are they all padding or one repeated example?) or target_modules"
            + (", or pass centered=False to use the uncentered second moment." if config.centered else ".")
        )


def _empty(name: str, width: int, rows: int) -> LayerSpectrum:
    nothing = torch.zeros(0)
    return LayerSpectrum(torch.zeros(0, width), nothing, nothing, nothing, rows, False, None, name)


def _measured(name: str, stats: InputStatistics, progress: GroupProgress | None, config: EvaConfig) -> LayerSpectrum:
    rows = int(stats.rows_seen().item())
    usable = max(rows - 1, 0) if config.centered else rows
    k = min(config.max_components, stats.dim, usable)
    if stats.dim < config.max_components:
        warn(
            f"layer {name!r} has d_in={stats.dim} < round(rho*rank)={config.max_components}; it can take at most "
            f"{stats.dim} ranks. Lower rank or rho, or leave it out of target_modules.",
        )
    if usable < min(config.max_components, stats.dim):
        centering = " (one goes to centering)" if config.centered else ""
        warn(
            f"layer {name!r} saw {rows} rows{centering}, so it has {usable} components where "
            f"{config.max_components} were asked for; it can take at most {k} ranks. Feed more or longer "
            "batches, or check the masks.",
            TooFewRowsWarning,
        )
    if k == 0:
        return _empty(name, stats.dim, rows)
    previous = progress.spectrum.components if progress is not None and progress.spectrum is not None else None
    spectrum = with_variance(stats.top(k, previous=previous, exact=True))
    converged_at = progress.converged_at if progress is not None else None
    return LayerSpectrum(
        components=spectrum.components,
        singular_values=spectrum.singular_values,
        explained_variance=spectrum.explained_variance,
        explained_variance_ratio=spectrum.explained_variance_ratio,
        rows=rows,
        converged=converged_at is not None,
        converged_at=converged_at,
        source=name,
    )


def warn_not_converged(state: EvaState, config: EvaConfig) -> None:
    """Warn (:class:`NotConvergedWarning`) naming the layers that saw rows but had not converged."""
    pending = [name for name in state.not_converged if state.layers[name].rows > 0]
    if pending:
        why = f"max_steps={config.max_steps} was reached" if state.steps >= config.max_steps else "the data ran out"
        shown = ", ".join(pending[:5]) + (f" and {len(pending) - 5} more" if len(pending) > 5 else "")
        warn(
            f"EVA stopped after {state.steps} batches ({why}) before {len(pending)} of {len(state.layers)} "
            f"layers converged: {shown}. Their components are the best estimate from the rows seen; feed more "
            "batches, raise max_steps, or lower tau.",
            NotConvergedWarning,
        )
