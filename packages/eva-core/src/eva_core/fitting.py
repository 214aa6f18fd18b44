"""``fit``: stream batches through a frozen model and measure its layers' inputs."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .batch_feed import BatchProgress, model_device, prepare
from .capture import InputRecorder, StopForward
from .checkpoint import Checkpointing
from .config import EvaConfig
from .convergence import ConvergenceTracker
from .distributed import join_process_group
from .errors import (
    EmptyDataError,
    InvalidConfigError,
    NoTargetLayersError,
    UnsupportedLayerError,
)
from .fit_progress import FitProgress, skip_consumed
from .fit_state import final_state, warn_not_converged
from .hookspecs import RowsFn
from .plugins import DomainHooks, plugin_manager
from .state import EvaState
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


def _fit(model: nn.Module, batches: Iterable[Any], config: EvaConfig, checkpoints: Checkpointing | None) -> EvaState:
    started = time.perf_counter()
    hooks = DomainHooks(plugin_manager(), model, config.domain)
    layers = _target_layers(model, config, hooks)
    rows_fns = _rows_functions(layers, hooks)
    device = model_device(model)
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
        prepared = prepare(hooks, batch, model, config, device)
        recorder.begin_batch(prepared.row_mask)
        with contextlib.suppress(StopForward):
            model(*prepared.args, **prepared.kwargs)
        recorder.end_batch()
        progress.consumed += 1

    synced = progress.steps
    try:
        with recorder, BatchProgress(stream, batches, config, group, progress.consumed) as bar:
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
    state = final_state(layers, recorder, tracker, config, steps)
    state.seconds = time.perf_counter() - started
    state.extra["domain"] = hooks.domain
    state.extra["history"] = progress.history  # layers converged after each check, for reports
    if group is not None:
        state.extra["world_size"] = group.size
        state.extra["batches"] = int(group.total(progress.consumed))
    warn_not_converged(state, config)
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
