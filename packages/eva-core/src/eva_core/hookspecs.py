"""The plugin contract: what a domain package (``eva-llm``, ``eva-vision``, ...) tells eva-core.

A plugin is a module or object with functions named like the specs below, decorated with
``eva_core.hookimpl``, and registered under the ``eva`` entry-point group (the markers and the values the
hooks exchange, :class:`PreparedBatch`, :class:`LoadedModel` and ``RowsFn``, are defined in
:mod:`eva_core.contract` and importable from here)::

    [project.entry-points.eva]
    vision = "eva_vision.plugin"

The entry-point name is the plugin's *domain* (what ``EvaConfig.domain`` picks). eva-core's built-in
``generic`` plugin implements every hook with ``trylast=True``, so a domain plugin only implements
what it changes. For one fit, eva-core calls the hooks of the chosen domain plugin plus the generic one.

The ``eva_cli_*`` hooks extend the ``eva-lora`` command line: ``eva-lora fit MODEL DATA --domain D`` asks domain
``D`` (then eva-core's built-in fallback, which reads ``module:factory`` models and ``.pt`` batch files)
to load the model and to read the data file; ``eva-lora plan MODEL --domain D`` asks it for the model built
without weights and an example batch (:func:`eva_cli_example`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .contract import PROJECT, LoadedModel, PreparedBatch, RowsFn, hookimpl, hookspec

if TYPE_CHECKING:
    from torch import nn

    from .config import EvaConfig
    from .state import EvaState

__all__ = ["PROJECT", "LoadedModel", "PreparedBatch", "RowsFn", "hookimpl", "hookspec"]


@hookspec
def eva_claims_model(model: nn.Module) -> bool:  # type: ignore[empty-body]
    """Whether this plugin's domain knows ``model`` (e.g. is a ViT). Called once per fit on every plugin;
    the results are collected. Two claims make the fit ask for ``EvaConfig.domain``."""


@hookspec(firstresult=True)
def eva_default_config(model: nn.Module) -> Mapping[str, Any] | None:
    """This domain's default :class:`EvaConfig` fields for ``model`` (e.g. ``{"rank": 8, "whiten": True}``),
    used when the caller passes no ``config``; the caller's keyword overrides still win. Called once per
    ``fit``, ``init`` and ``eva-lora fit``. firstresult: the generic plugin answers ``{}`` (EvaConfig's defaults)."""


@hookspec(firstresult=True)
def eva_lora_fields(model: nn.Module, targets: Sequence[str]) -> Mapping[str, Any] | None:
    """The ``peft.LoraConfig`` fields this domain's adapters need on ``model`` whose layers ``targets`` get
    adapters: the task head in ``modules_to_save``, ``task_type``, ``fan_in_fan_out`` for layers that store
    their weight transposed (GPT-2's ``Conv1D``). Called once per ``apply``. Used as the ``LoraConfig``
    when the caller passes none; with the caller's own ``LoraConfig`` only ``fan_in_fan_out=True`` is
    taken from here (without it the adapter's shapes are wrong). firstresult: the generic plugin
    answers ``{}``."""


@hookspec(firstresult=True)
def eva_target_modules(model: nn.Module, config: EvaConfig) -> Sequence[str] | None:
    """Names (as in ``model.named_modules()``) of the layers to adapt when ``config.target_modules`` is
    None. firstresult: the domain plugin answers before the generic one (every ``nn.Linear`` outside the
    output heads, as peft's ``all-linear``)."""


@hookspec(firstresult=True)
def eva_layer_rows(name: str, module: nn.Module) -> RowsFn | None:
    """The function that turns this layer's input into SVD rows, or None if the plugin cannot read it.
    Called once per targeted layer when the fit starts. firstresult."""


@hookspec(firstresult=True)
def eva_prepare_batch(batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
    """Turn one item of the user's iterable into model inputs and a row mask (padding and, unless
    ``config.use_label_mask`` is False, rows labelled ``config.label_mask_value`` excluded). Called once
    per batch. firstresult; None passes to the next plugin."""


@hookspec
def eva_step_done(step: int, converged: int, layers: int) -> None:
    """Observer: called after each convergence check (every ``check_every`` batches) with the batches
    consumed and how many of the targeted layers have converged."""


@hookspec
def eva_ranks_allocated(state: EvaState) -> None:
    """Observer: called once when the fit ends and ranks are allocated."""


@hookspec(firstresult=True)
def eva_cli_load_model(model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
    """Load the model ``eva-lora fit`` names: a local folder, a file or an alias this domain knows (e.g.
    ``minilm``). Called once per ``eva-lora fit`` on the chosen domain's plugin, then on the built-in
    fallback. firstresult: return None when ``model`` is not something this domain loads.

    Args:
        model: the MODEL argument as typed.
        data: the DATA argument (a domain may size a task head from it, e.g. GLUE's number of labels).
        options: the ``--option KEY=VALUE`` pairs, for domain settings (``task=sst2``...).

    Raises:
        EvaError: ``model`` is this domain's but cannot be loaded (a missing package or file); the
            message says how to fix it.
    """


@hookspec(firstresult=True)
def eva_cli_batches(
    data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
) -> Iterable[Any] | None:
    """The batches ``eva-lora fit`` feeds to ``fit``, read from the data file ``data`` (e.g. a GLUE TSV).
    Called once per ``eva-lora fit``, after :func:`eva_cli_load_model`, on the chosen domain's plugin, then
    on the built-in fallback. firstresult: return None when this domain does not read that file.

    Args:
        data: the DATA argument as typed: an existing file or folder, or a name (e.g. a task alias).
        loaded: what :func:`eva_cli_load_model` returned.
        batch_size: B, examples per batch.
        rows: read at most this many examples (``max_batches * batch_size``), or None for all.
        options: the ``--option KEY=VALUE`` pairs.

    Raises:
        EvaError: the file is this domain's kind but cannot be read; the message names the line/column.
    """


@hookspec(firstresult=True)
def eva_cli_example(
    model: str, batch_size: int, length: int, options: Mapping[str, str]
) -> tuple[nn.Module, Any] | None:
    """The model ``eva-lora plan`` names, built on the meta device (its configuration only: no weights are read),
    and one example batch of its inputs as ``fit`` takes them, whose values are never read (e.g. ``{"input_ids":
    zeros(batch_size, length)}``). Called once per ``eva-lora plan`` on the chosen domain's plugin.
    firstresult: return None when ``model`` is not something this domain builds.

    Args:
        model: the MODEL argument as typed (a folder, a ``config.json``, an alias).
        batch_size: B, examples per batch.
        length: T, tokens (or steps, patches) per example.
        options: the ``--option KEY=VALUE`` pairs.

    Raises:
        EvaError: ``model`` is this domain's but cannot be built; the message says how to fix it.
    """
