"""``fit``: stream batches through a frozen model and measure its layers' inputs."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..capture import InputRecorder, StopForward, embedding_rows
from ..errors import EmptyDataError, EvaError
from ..model_view import require_materialized, without_adapters
from ..plugins import DomainHooks, PluginManager, plugin_manager
from .checkpoint import Checkpointing
from .costs import StatisticsChooser, gram_budget
from .distributed import join_process_group
from .feed import BatchProgress, model_device, placed, skip_consumed, warn_if_positional
from .spectra import ConvergenceTracker, final_state, warn_not_converged

if TYPE_CHECKING:
    from ..config import EvaConfig
    from ..state import EvaState

__all__ = ["fit"]

_log = logging.getLogger(__name__)


def fit(
    model: nn.Module,
    batches: Iterable[Any],
    config: EvaConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    resume_from: str | os.PathLike[str] | None = None,
    plugins: PluginManager | None = None,
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
        model: any ``nn.Module``; batches are fed as the selected plugin prepares them. A model that
            carries peft adapters (a ``PeftModel``) is measured with them disabled, its layers named as
            in the plain model, as peft's EVA does: the state then adds a second adapter (``apply``).
        batches: any iterable of batches (a DataLoader, a list of dicts, a generator).
        config: the EVA settings; default: the domain's (``eva_default_config``: e.g. rank 8 and whitened
            components for a ViT), which ``overrides`` replace field by field (``fit(m, b, rank=8)``).
        checkpoint_dir: write the running state to this folder every ``checkpoint_every`` batches.
        checkpoint_every: batches between checkpoints (default 50; needs ``checkpoint_dir``).
        resume: continue from the latest checkpoint in ``checkpoint_dir`` (a fresh fit if there is none
            yet). Pass the same ``batches``: the ones already consumed are skipped.
        resume_from: continue from the checkpoints in this folder (one must be there).
        plugins: the plugin manager to ask (default: a fresh :func:`eva_core.plugin_manager`).

    Returns:
        The :class:`EvaState`: per-layer spectra, ranks and the batches consumed.

    Raises:
        EmptyDataError: ``batches`` yielded nothing, or every row was masked out.
        NoTargetLayersError: no module matched the targets.
        UnsupportedBatchError: no plugin can feed a batch of that type to the model.
        NonFiniteActivationError: a layer received NaN or infinity.
        NoVarianceError: no targeted layer's input varies (every one is constant or zero).
        InvalidConfigError: ``checkpoint_dir`` holds checkpoints this fit does not resume from.
        CheckpointMismatchError: the checkpoint to resume from was written by another config, model (layer
            types, widths or weights) or number of processes.
        StateFileError: no checkpoint to resume from is readable (an unreadable latest one is skipped).
        DistributedFitError: another rank of a distributed fit failed.
        MetaDeviceError: a parameter or buffer of ``model`` is on the meta device.
    """
    require_materialized(model, "fit")
    with without_adapters(model) as plain:
        hooks = (plugins or plugin_manager()).for_model(plain, overrides.get("domain", config and config.domain))
        config = hooks.config(plain, config, overrides)
        checkpoints = Checkpointing.from_arguments(checkpoint_dir, checkpoint_every, resume, resume_from)
        with torch.no_grad():
            return _fit(plain, batches, config, checkpoints, hooks)


def _fit(
    model: nn.Module, batches: Iterable[Any], config: EvaConfig, checkpoints: Checkpointing, hooks: DomainHooks
) -> EvaState:
    """``fit`` under ``torch.no_grad``, once the plugins, the config and the checkpoints are settled."""
    started = time.perf_counter()
    fitting = _Fit(model, batches, config, checkpoints, hooks)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        fitting.run()
    finally:
        for module, training in modes.items():
            module.training = training
    state = fitting.result()
    state.seconds = time.perf_counter() - started
    warn_not_converged(state, config)
    hooks.ranks_allocated(state)
    if fitting.group.rank == 0:
        _log_summary(state)
    _log.debug("EVA fit: ranks %s", state.ranks)
    return state


def _log_summary(state: EvaState) -> None:
    """One INFO line at the end of a fit: layers, batches, converged layers, rank budget used, seconds."""
    layers = len(state.layers)
    budget = state.config.rank * layers
    _log.info(
        "EVA fit done: %d layers, %d batches, %d/%d layers converged, ranks %d of the budget %d (rank %d x %d "
        "layers), %.1fs",
        layers, state.steps, layers - len(state.not_converged), layers, sum(state.ranks.values()), budget,
        state.config.rank, layers, state.seconds,
    )  # fmt: skip


_END = object()


class _Fit:
    """One fit under way: the targeted layers hooked by a recorder, their convergence, where the fit stands
    (restored from a checkpoint when resuming) and the processes it runs on.

    Everything that can fail before the first batch (the layers, the process group, the checkpoint, the
    batches to skip) fails in the constructor, before the model is touched.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Iterable[Any],
        config: EvaConfig,
        checkpoints: Checkpointing,
        hooks: DomainHooks,
    ) -> None:
        self.model = model
        self.batches = batches
        self.config = config
        self.checkpoints = checkpoints
        self.hooks = hooks
        self.layers = hooks.layers(model, config)
        rows_fns = hooks.rows_functions(self.layers)
        self.device = model_device(model)
        self.group = join_process_group(config.distributed)
        counted = {name for name, rows in rows_fns.items() if getattr(rows, "func", None) is embedding_rows}
        self.plan = StatisticsChooser(config, gram_budget(config, self.device, self.group), counted)
        self.recorder = InputRecorder(
            self.layers,
            rows_fns,
            self.group.statistics_factory(self.plan.make),
            share_inputs=config.share_identical_inputs,
            stop_early=config.stop_forward_early,
        )
        self.tracker = ConvergenceTracker(config, len(self.layers))
        self.progress, left = checkpoints.resume(
            self.layers, config, self.recorder, self.tracker, self.group, self.plan
        )
        self.plan.left = self.plan.left if left is None else left
        self.synced = self.progress.steps  # the step of the last statistics exchange
        self.exhausted = False  # this process's batches ran out
        self.stream = iter(batches)
        if self.progress.steps:  # the same on every rank, so all of them enter the collective agreement
            self.stream = self.group.agree(
                lambda: skip_consumed(self.stream, self.progress.consumed),
                "while skipping the batches consumed before the checkpoint",
            )

    def run(self) -> None:
        """Feed batches until every layer has converged, after ``max_steps`` steps, or once every process
        ran out of batches."""
        config, progress = self.config, self.progress
        shown = config.progress and self.group.rank == 0
        bar = BatchProgress(self.stream, self.batches, config.max_steps, progress.consumed, shown, len(self.layers))
        if progress.history:  # a resumed fit starts from the layers its checkpoint had converged
            bar.converged_layers(progress.history[-1]["converged"])
        with self.recorder, bar:
            while progress.steps < config.max_steps and self.group.step(lambda: self._next(bar), self.recorder):
                progress.steps += 1
                steps = progress.steps
                if (steps % config.check_every == 0 or steps >= config.max_steps) and not self._check(bar):
                    break
                if self.checkpoints.due(steps) and steps < config.max_steps:
                    self.checkpoints.save(
                        progress, config, self.layers, self.recorder, self.tracker, self.plan, self.group
                    )
            if self.synced != progress.steps:
                self.group.sync(self.recorder)

    def _next(self, bar: BatchProgress) -> bool:
        """Run the model on this process's next batch; False once its batches ran out (for good)."""
        batch = _END if self.exhausted else next(bar, _END)
        self.exhausted = batch is _END
        if self.exhausted:
            return False
        prepared = self.hooks.prepare_batch(batch, self.model, self.config)
        prepared = placed(prepared, batch, self.hooks.domain, self.device)
        self.recorder.begin_batch(prepared.row_mask)
        try:
            with contextlib.suppress(StopForward):
                self.model(*prepared.args, **prepared.kwargs)
        except Exception as error:
            if not isinstance(error, EvaError):
                warn_if_positional(batch, prepared)
            raise
        self.recorder.end_batch()
        self.progress.consumed += 1
        return True

    def _check(self, bar: BatchProgress) -> bool:
        """Check convergence after this step (on the statistics of every process); False when no layer is
        left to measure."""
        steps, recorder = self.progress.steps, self.recorder
        self.group.sync(recorder)
        self.synced = steps
        members = {leader: recorder.members(leader) for leader in recorder.order}
        active = [name for name in recorder.order if name in recorder.active]
        converged, reopened = self.tracker.check(steps, recorder.statistics, members, active)
        recorder.deactivate(converged)
        recorder.activate(reopened)
        done = sum(len(members[leader]) for leader in members if leader not in recorder.active)
        bar.converged_layers(done)
        self.progress.history.append({"step": steps, "converged": done})
        self.hooks.step_done(step=steps, converged=done, layers=len(self.layers))
        return bool(recorder.active)

    def result(self) -> EvaState:
        """The :class:`EvaState` read from the final statistics.

        Raises:
            EmptyDataError: no batch was fed, or every row was masked out.
        """
        steps = self.progress.steps
        if steps == 0:
            raise EmptyDataError("fit(batches=...) yielded no batch; pass a non-empty iterable (a DataLoader, a list).")
        state = final_state(self.layers, self.recorder, self.tracker, self.config, steps)
        state.extra["domain"] = self.hooks.domain
        state.extra["history"] = self.progress.history  # layers converged after each check, for reports
        if self.config.tau is None:  # each layer's estimated subspace error when it stopped being measured
            members = {leader: self.recorder.members(leader) for leader in self.recorder.order}
            estimates = self.tracker.estimated_errors(members)
            state.extra["estimated_error"] = {name: estimates.get(name) for name in self.layers}
        state.extra.update(self.group.summary(self.progress.consumed))
        return state
