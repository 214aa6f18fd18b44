"""``fit``: stream batches through a frozen model and measure its layers' inputs."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .capture import InputRecorder, StopForward, input_width
from .checkpoint import Checkpointing, FitProgress, skip_consumed
from .config import EvaConfig
from .convergence import ConvergenceTracker, GroupProgress
from .distributed import ProcessGroup, join_process_group
from .errors import (
    EmptyDataError,
    InvalidConfigError,
    NoTargetLayersError,
    NotConvergedWarning,
    TooFewRowsWarning,
    UnsupportedBatchError,
    UnsupportedLayerError,
    warn,
)
from .hookspecs import PreparedBatch, RowsFn
from .plugins import DomainHooks, plugin_manager
from .state import EvaState, LayerSpectrum, allocate_layer_ranks
from .svd import GramStatistics, InputStatistics, SketchStatistics
from .targets import select_modules

__all__ = ["fit", "resolve_config"]

_log = logging.getLogger(__name__)


def resolve_config(config: EvaConfig | None, overrides: Mapping[str, Any]) -> EvaConfig:
    """``config`` (or the defaults) with ``overrides`` applied and validated."""
    base = config or EvaConfig()
    return base.replace(**overrides) if overrides else base


def fit(
    model: nn.Module,
    batches: Iterable[Any],
    config: EvaConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    resume_from: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> EvaState:
    """Measure the inputs of the targeted layers of ``model`` over ``batches`` and allocate ranks.

    The model runs in eval mode under ``torch.no_grad``; no parameter or buffer changes, and every
    module's train/eval mode is restored on return. The fit ends when every measured layer has
    converged, after ``config.max_steps`` batches, or when ``batches`` runs out.

    Under ``torch.distributed`` (``torchrun``, ``accelerate launch``) with more than one process, each
    rank passes its own shard of the batches; the ranks merge their statistics, and every rank returns
    the same state, equal to a single-process fit on the union of the batches (see
    ``docs/distributed.md``). ``max_steps``, ``min_steps`` and ``check_every`` then count batches per rank.

    Args:
        model: any ``nn.Module``; batches are fed as the selected plugin prepares them.
        batches: any iterable of batches (a DataLoader, a list of dicts, a generator).
        config: the EVA settings; ``overrides`` replace single fields (``fit(m, b, rank=8)``).
        checkpoint_dir: write the running state to this folder every ``checkpoint_every`` batches.
        checkpoint_every: batches between checkpoints (default 50; needs ``checkpoint_dir``).
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (a fresh fit if there is none
            yet). Pass the same ``batches``: the ones already consumed are skipped.
        resume_from: continue from the checkpoints in this folder (one must be there).

    Returns:
        The :class:`EvaState`: per-layer spectra, ranks and the batches consumed.

    Raises:
        EmptyDataError: ``batches`` yielded nothing, or every row was masked out.
        NoTargetLayersError: no module matched the targets.
        UnsupportedBatchError: no plugin can feed a batch of that type to the model.
        NonFiniteActivationError: a layer received NaN or infinity.
        CheckpointMismatchError: the checkpoint to resume from was written by another config, model or
            number of processes.
        DistributedFitError: another rank of a distributed fit failed.
    """
    config = resolve_config(config, overrides)
    checkpoints = Checkpointing.from_arguments(checkpoint_dir, checkpoint_every, resume, resume_from)
    if hasattr(model, "peft_config"):
        raise InvalidConfigError(
            f"fit(model=...) got a {type(model).__name__} that already carries adapters; pass the base model "
            "(model.get_base_model() with adapters unloaded, or a fresh load)."
        )
    with torch.no_grad():
        return _fit(model, batches, config, checkpoints)


_END = object()
_input_width = input_width  # the name the tests of conv layers import


def _fit(model: nn.Module, batches: Iterable[Any], config: EvaConfig, checkpoints: Checkpointing | None) -> EvaState:
    started = time.perf_counter()
    hooks = DomainHooks(plugin_manager(), model, config.domain)
    layers = _target_layers(model, config, hooks)
    rows_fns = _rows_functions(layers, hooks)
    device = _model_device(model)
    group = join_process_group(config)
    plan = _StatisticsPlan(config)
    make = plan.make if group is None else group.statistics_factory(plan.make)
    recorder = InputRecorder(
        layers,
        rows_fns,
        make,
        share_inputs=config.share_identical_inputs,
        stop_early=config.stop_forward_early,
    )
    tracker = ConvergenceTracker(config, len(layers))
    progress = FitProgress()
    if checkpoints is not None:
        progress, left = checkpoints.resume(layers, config, recorder, tracker, make, group)
        plan.left = plan.left if left is None else left
    stream = skip_consumed(iter(batches), progress.consumed, group)
    modes = {module: module.training for module in model.modules()}
    model.eval()

    def forward(batch: Any) -> None:
        prepared = _prepare(hooks, batch, model, config, device)
        recorder.begin_batch(prepared.row_mask)
        with contextlib.suppress(StopForward):
            model(*prepared.args, **prepared.kwargs)
        recorder.end_batch()
        progress.consumed += 1

    synced = progress.steps
    try:
        with recorder, _progress(stream, batches, config, group, progress.consumed) as bar:
            exhausted = False

            def next_batch() -> bool:  # this rank's part of a distributed step
                nonlocal exhausted
                batch = _END if exhausted else next(bar, _END)
                exhausted = batch is _END
                if not exhausted:
                    forward(batch)
                return not exhausted

            while progress.steps < config.max_steps:
                if group is None:
                    batch = next(bar, _END)
                    if batch is _END:
                        break
                    forward(batch)
                elif not group.step(next_batch, recorder):
                    break
                progress.steps += 1
                steps = progress.steps
                if steps % config.check_every == 0 or steps >= config.max_steps:
                    if group is not None:
                        group.sync(recorder, make)
                        synced = steps
                    members = {leader: recorder.members(leader) for leader in recorder.order}
                    converged, reopened = tracker.check(
                        steps, recorder.statistics, members, [n for n in recorder.order if n in recorder.active]
                    )
                    recorder.deactivate(converged)
                    recorder.activate(reopened)
                    done = sum(len(members[leader]) for leader in members if leader not in recorder.active)
                    bar.set_postfix_str(f"{done}/{len(layers)} layers converged")
                    progress.history.append({"step": steps, "converged": done})
                    hooks.notify("eva_step_done", step=steps, converged=done, layers=len(layers))
                    if not recorder.active:
                        break
                if checkpoints is not None and checkpoints.due(steps) and steps < config.max_steps:
                    checkpoints.save(progress, config, layers, recorder, tracker, plan.left, group)
            if group is not None and synced != progress.steps:
                group.sync(recorder, make)
    finally:
        for module, training in modes.items():
            module.training = training
    steps = progress.steps
    if steps == 0:
        raise EmptyDataError("fit(batches=...) yielded no batch; pass a non-empty iterable (a DataLoader, a list).")
    state = _final_state(layers, recorder, tracker, config, steps)
    state.seconds = time.perf_counter() - started
    state.extra["domain"] = hooks.domain
    state.extra["history"] = progress.history  # layers converged after each check, for reports
    if group is not None:
        state.extra["world_size"] = group.size
        state.extra["batches"] = int(group.total(progress.consumed))
    _warn_not_converged(state, config)
    hooks.notify("eva_ranks_allocated", state=state)
    _log.info("EVA fit: %d batches, %.2fs, ranks %s", steps, state.seconds, state.ranks)
    return state


class _StatisticsPlan:
    """Chooses exact Gram statistics per measured input while they fit ``gram_memory_bytes``, else a sketch."""

    def __init__(self, config: EvaConfig) -> None:
        self.config = config
        self.left = config.gram_memory_bytes

    def make(self, name: str, dim: int, device: torch.device) -> InputStatistics:
        need = 4 * dim * dim
        if need <= self.left:
            self.left -= need
            return GramStatistics(dim, device, centered=self.config.centered, seed=self.config.seed)
        _log.info(
            "layer %r (d_in=%d) is measured with a streaming sketch (gram_memory_bytes left: %d)", name, dim, self.left
        )
        width = 2 * self.config.max_components + 8
        return SketchStatistics(dim, width, device, centered=self.config.centered)


def _target_layers(model: nn.Module, config: EvaConfig, hooks: DomainHooks) -> dict[str, nn.Module]:
    targets = config.target_modules
    if targets is None:
        targets = tuple(hooks.call("eva_target_modules", model=model, config=config) or ())
        if not targets:
            raise NoTargetLayersError(
                f"the {hooks.domain!r} eva plugin finds no layer to adapt in {type(model).__name__}; pass "
                "target_modules (names or a regex from model.named_modules())."
            )
    return select_modules(model, targets)


def _rows_functions(layers: dict[str, nn.Module], hooks: DomainHooks) -> dict[str, RowsFn]:
    fns = {}
    for name, module in layers.items():
        fn = hooks.call("eva_layer_rows", name=name, module=module)
        if fn is None:
            raise UnsupportedLayerError(
                f"target_modules selects {name!r}, a {type(module).__name__}, whose inputs no installed eva "
                f"plugin can turn into rows (domain {hooks.domain!r}); target nn.Linear layers, or install the "
                "domain package that supports this layer type."
            )
        fns[name] = fn
    return fns


def _prepare(
    hooks: DomainHooks, batch: Any, model: nn.Module, config: EvaConfig, device: torch.device | None
) -> PreparedBatch:
    prepared = hooks.call("eva_prepare_batch", batch=batch, model=model, config=config)
    if prepared is None:
        raise UnsupportedBatchError(
            f"batches yielded a {type(batch).__name__}, which no eva plugin (domain {hooks.domain!r}) can feed "
            "to the model; yield a dict of tensors (keyword arguments), a tuple (positional arguments) or a "
            "tensor, or install the domain package for this kind of data."
        )
    if device is None:
        return prepared
    return PreparedBatch(
        args=_to_device(prepared.args, device),
        kwargs=_to_device(dict(prepared.kwargs), device),
        row_mask=None if prepared.row_mask is None else prepared.row_mask.to(device),
    )


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def _model_device(model: nn.Module) -> torch.device | None:
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return None


class _progress:  # noqa: N801 - used as a context manager like tqdm
    """A progress bar over the batch iterator (shown by rank 0 only); ``next(bar)`` reads the next batch."""

    def __init__(
        self, stream: Iterator[Any], batches: Iterable[Any], config: EvaConfig, group: ProcessGroup | None, start: int
    ) -> None:
        total = config.max_steps
        if hasattr(batches, "__len__"):
            total = min(total, len(batches))  # type: ignore[arg-type]
        shown = config.progress and (group is None or group.rank == 0)
        self.bar = tqdm(
            stream, total=total, initial=start, desc="EVA", unit="batch", disable=None if shown else True, leave=False
        )
        self.iterator = iter(self.bar)

    def __next__(self) -> Any:
        return next(self.iterator)

    def set_postfix_str(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _final_state(
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


def _warn_not_converged(state: EvaState, config: EvaConfig) -> None:
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
