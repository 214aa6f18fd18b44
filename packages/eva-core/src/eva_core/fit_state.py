"""The end of a fit: the per-layer spectra read from the gathered statistics, and the :class:`EvaState`."""

from __future__ import annotations

import torch
from torch import nn

from .capture import InputRecorder, input_width
from .config import EvaConfig
from .convergence import ConvergenceTracker, GroupProgress
from .errors import EmptyDataError, NotConvergedWarning, TooFewRowsWarning, warn
from .state import EvaState, LayerSpectrum, allocate_layer_ranks
from .svd import InputStatistics

__all__ = ["final_state", "warn_not_converged"]


def final_state(
    layers: dict[str, nn.Module], recorder: InputRecorder, tracker: ConvergenceTracker, config: EvaConfig, steps: int
) -> EvaState:
    if not any(int(stats.rows_seen().item()) for stats in recorder.statistics.values()):
        raise EmptyDataError(
            "every row was masked out (attention_mask 0 or labels -100 everywhere) or no targeted layer ran; "
            "check the batches' masks, or pass a different target_modules."
        )
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
    return EvaState(layers=spectra, ranks=allocate_layer_ranks(spectra, config), steps=steps, config=config)


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
    spectrum = stats.top(k, previous=previous, exact=True)
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
