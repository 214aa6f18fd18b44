"""``plan``: what a fit of a model would hold and cost, from one example batch, before any data is read.

One forward pass runs on the meta device (no weights, no arithmetic: a 7B model plans in under a second)
through the fit's own :class:`~eva_core.capture.InputRecorder`, whose statistics only record each measured
input's width and rows; so the layers that share an input (q/k/v) are grouped exactly as a fit groups
them, and each input's kind is chosen by the fit's own :class:`~eva_core.fitting.costs.StatisticsChooser`
in the order the fit meets them. ``torch.utils.flop_counter`` counts the forward's FLOPs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from ..capture import InputRecorder, embedding_rows
from ..errors import InvalidConfigError, MetaDeviceError
from ..fitting.costs import (
    Choice,
    StatisticsChooser,
    gram_budget,
    sketch_width,
    solve_flops,
    statistic_bytes,
    transient_bytes,
    update_flops,
)
from ..fitting.feed import model_device, placed
from ..model_view import without_adapters
from ..plugins import DomainHooks, PluginManager, plugin_manager
from .plan import InputPlan, Plan

if TYPE_CHECKING:
    from torch import nn

    from ..config import EvaConfig
    from ..svd import InputStatistics

__all__ = ["plan"]


def plan(
    model: nn.Module,
    batch: Any,
    config: EvaConfig | None = None,
    *,
    plugins: PluginManager | None = None,
    world_size: int = 1,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> Plan:
    """Predict, per measured input and in total, what ``fit(model, batches, config, **overrides)`` holds and
    costs on batches shaped like ``batch``: each input's statistics kind (as the fit chooses it), bytes,
    update FLOPs per batch, solver FLOPs per check and, for ``world_size`` > 1, bytes sent per check; the
    predicted peak extra memory and the statistics' work relative to the forward.

    Nothing is computed on real data and nothing in ``model`` changes: the forward runs on the meta device
    (the model's weights, if it has any, are swapped for meta tensors for that call only).

    Args:
        model: the model to fit, with its weights or built on the meta device (``with torch.device("meta"):``).
        batch: one example batch as ``fit`` takes it, whose values are never read (for a causal LM a dict with a
            (B, T) ``input_ids`` tensor is enough; leave out what the model inspects, such as transformers'
            check of an ``attention_mask``, which fails on the meta device). Its rows count as unmasked.
        config: the EVA settings; default: the domain's, which ``overrides`` replace field by field.
        plugins: the plugin manager to ask (default: a fresh :func:`eva_core.plugin_manager`).
        world_size: W, the ranks of a distributed fit, for the exchange figures.
        device: where the fit will run, for the default ``gram_memory_bytes`` (a quarter of its free memory, here
            and now: a distributed fit takes the smallest over its ranks when it starts); default: the model's
            device (the CPU for a model on the meta device).

    Returns:
        The :class:`Plan`; ``plan(...).table()`` renders it.

    Raises:
        InvalidConfigError: ``world_size`` is not an integer >= 1, ``device`` names no device, or a setting is
            invalid.
        NoTargetLayersError: no module matched the targets.
        UnsupportedBatchError: no plugin can feed a batch of that type to the model.
        MetaDeviceError: the model's forward reads values (of the batch or the weights) the meta run lacks.
    """
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise InvalidConfigError(f"plan(world_size={world_size!r}) is invalid: expected an integer >= 1, e.g. 8.")
    with without_adapters(model) as plain:
        hooks = (plugins or plugin_manager()).for_model(plain, overrides.get("domain", config and config.domain))
        config = hooks.config(plain, config, overrides)
        where = _device(device) if device is not None else model_device(plain)
        budget = gram_budget(config, where)
        recorder, probes = _probing_recorder(hooks, plain, config, budget)
        prepared = placed(hooks.prepare_batch(batch, plain, config), batch, hooks.domain, torch.device("meta"))
        forward = _meta_forward(plain, recorder, prepared.args, dict(prepared.kwargs))
    inputs = tuple(
        _input_plan(name, recorder.members(name), probes[name], config, world_size) for name in recorder.order
    )
    return Plan(inputs, config, hooks.domain, budget, forward, world_size)


def _probing_recorder(
    hooks: DomainHooks, model: nn.Module, config: EvaConfig, budget: int
) -> tuple[InputRecorder, dict[str, _Probe]]:
    """The fit's recorder over the layers the fit would measure, with probes for statistics, each of the kind
    the fit's chooser gives it; the probes by measured input."""
    layers = hooks.layers(model, config)
    rows_fns = hooks.rows_functions(layers)
    counted = {name for name, rows in rows_fns.items() if getattr(rows, "func", None) is embedding_rows}
    chooser = StatisticsChooser(config, budget, counted)
    probes: dict[str, _Probe] = {}

    def probe(name: str, dim: int, _: torch.device) -> InputStatistics:
        probes[name] = _Probe(dim, chooser.decide(name, dim))
        return cast("InputStatistics", probes[name])  # the recorder only updates it (and copies it on a split)

    recorder = InputRecorder(layers, rows_fns, probe, share_inputs=config.share_identical_inputs, stop_early=False)
    return recorder, probes


def _device(device: torch.device | str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidConfigError(
            f"plan(device={device!r}) is invalid ({error}); pass e.g. 'cpu' or 'cuda:0'."
        ) from None


def _meta_forward(
    model: nn.Module,
    recorder: InputRecorder,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> float:
    """Run ``model`` once on the meta device with ``recorder`` hooked; returns the forward's FLOPs. No row mask:
    rows are counted unmasked, and a meta mask has no values to lay out (a square batch's symmetry check)."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    meta = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors.items()}
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), recorder, FlopCounterMode(display=False) as counter:
            recorder.begin_batch(None)
            try:
                functional_call(model, meta, args, kwargs, strict=False)
            except (RuntimeError, NotImplementedError) as error:
                raise MetaDeviceError(
                    f"plan: the forward of {type(model).__name__} on the meta device failed ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]}): it reads the values of an input or a weight, which a plan does "
                    "not have; leave out of the batch what the model inspects (e.g. an attention_mask)."
                ) from error
            recorder.end_batch()
    finally:
        for module, training in modes.items():
            module.training = training
    return float(counter.get_total_flops())


class _Probe:
    """Statistics that only record what the planner needs: the input's width, its kind, and its rows."""

    def __init__(self, dim: int, choice: Choice) -> None:
        self.dim = dim
        self.choice = choice
        self.rows = 0

    def update(self, rows: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.rows += int(rows.shape[0])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"rows": torch.tensor(self.rows)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.rows = int(state["rows"])


def _input_plan(name: str, members: list[str], probe: _Probe, config: EvaConfig, world: int) -> InputPlan:
    """The figures of one measured input."""
    kind, dim, rows, k = probe.choice.kind, probe.dim, probe.rows, config.max_components
    width = min(sketch_width(k), dim)
    return InputPlan(
        leader=name,
        members=tuple(members),
        d_in=dim,
        rows=rows,
        kind=kind,
        reason=probe.choice.reason,
        max_components=min(k, dim),
        sketch_width=width,
        statistic_bytes=statistic_bytes(kind, dim, k),
        update_flops=rows * update_flops(kind, dim, k),
        solve_flops=solve_flops(kind, dim, k),
        transient_bytes=transient_bytes(kind, dim, rows, k),
        exchange_bytes=0 if world == 1 else _exchange(kind, dim, min(k, dim), width),
    )


def _exchange(kind: str, dim: int, k: int, width: int) -> int:
    """Bytes one rank sends per check for one input (see :class:`InputPlan`)."""
    components = 4 * k * (dim + 3)  # the owner's broadcast of (k, d_in + 3) float32
    if kind == "counts":
        return 8 * dim
    if kind == "exact":  # the float64 scatter and sum reduced, and the rows count and finite flag all-reduced
        return 8 * dim * dim + 8 * dim + 16 + components
    # the flushed sketch (at most l rows) packed with its mean, count, total and residual and gathered; three
    # float64 all-reduced (rows, rows sent, finite)
    return 4 * (width * dim + 2 * dim + 10) + 24 + components
