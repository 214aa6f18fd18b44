"""The plugin manager: one discovery of the ``eva`` entry-point group, one rule for which domain serves a
model, and a typed method per hook.

Each hook is called through a method of :class:`DomainHooks` (as tox wraps ``pm.hook.tox_*``), so a call
site reads like a function call and a renamed hook fails the type check; ``check_pending`` makes a
plugin with a misspelt ``eva_*`` implementation fail when it is registered, not silently never run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from .. import hookspecs
from ..errors import (
    AmbiguousDomainError,
    DomainMismatchError,
    GenericFallbackWarning,
    InvalidConfigError,
    NoTargetLayersError,
    PluginLoadError,
    UnknownDomainError,
    UnsupportedLayerError,
    warn,
)
from ..targets import select_modules
from . import generic

if TYPE_CHECKING:
    from torch import nn

    from ..config import EvaConfig
    from ..hookspecs import LoadedModel, PreparedBatch, RowsFn
    from ..state import EvaState

__all__ = ["DISABLE_ENV", "GENERIC", "DomainHooks", "PluginEntry", "PluginManager", "discover", "plugin_manager"]

_log = logging.getLogger(__name__)

DISABLE_ENV = "EVA_DISABLE_PLUGINS"
"""Comma-separated entry-point names to skip (``*`` skips all); e.g. ``EVA_DISABLE_PLUGINS=vision``."""

GENERIC = "generic"
"""The built-in plugin every domain falls back to (``EvaConfig.domain="generic"`` picks it alone)."""


@dataclass(frozen=True)
class PluginEntry:
    """One entry point of the ``eva`` group as discovery found it.

    Attributes:
        domain: the entry-point name (what ``EvaConfig.domain`` picks).
        distribution: the package that registers it, and its ``version``.
        value: the module or object the entry point names.
        plugin: the loaded plugin, or ``None`` when it is disabled or failed.
        status: ``loaded``, ``disabled (EVA_DISABLE_PLUGINS)`` or ``failed: <error>``.
        error: the import error of a failed plugin.
    """

    domain: str
    distribution: str
    version: str
    value: str
    plugin: object | None
    status: str
    error: BaseException | None = None


def discover() -> list[PluginEntry]:
    """Every entry point of the ``eva`` group, sorted by name, each loaded unless ``EVA_DISABLE_PLUGINS``
    names it. A plugin that fails to import is returned with its error, not raised."""
    skipped = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}
    found = []
    for point in sorted(entry_points(group=hookspecs.PROJECT), key=lambda p: p.name):
        dist = getattr(point, "dist", None)
        name, version = (dist.name, dist.version) if dist is not None else ("an unknown distribution", "?")
        if "*" in skipped or point.name in skipped:
            found.append(PluginEntry(point.name, name, version, point.value, None, f"disabled ({DISABLE_ENV})"))
            continue
        try:
            plugin = point.load()
        except Exception as error:  # any import-time failure of third-party code
            found.append(PluginEntry(point.name, name, version, point.value, None, f"failed: {error!r}", error))
            continue
        found.append(PluginEntry(point.name, name, version, point.value, plugin, "loaded"))
    return found


class PluginManager:
    """The hook specs, the built-in generic plugin and, unless told not to, every plugin of the ``eva``
    entry-point group that ``EVA_DISABLE_PLUGINS`` does not name.

    Args:
        load_entry_points: load the installed domain plugins (False: the generic plugin only).

    Raises:
        PluginLoadError: an entry point failed to import, or implements a hook the contract does not
            have (a misspelt ``eva_*`` name); the message names it and its distribution.
    """

    def __init__(self, load_entry_points: bool = True) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._builtin: set[str] = set()
        self._distributions: dict[str, str] = {}
        self.register(generic, GENERIC, builtin=True)
        if load_entry_points:
            for entry in discover():
                self._register_entry(entry)

    def _register_entry(self, entry: PluginEntry) -> None:
        where = f"{entry.domain!r} ({entry.value}, from {entry.distribution})"
        if entry.error is not None:
            raise PluginLoadError(
                f"eva plugin {where} failed to load: {entry.error!r}. Fix or uninstall that package, or skip it "
                f"with {DISABLE_ENV}={entry.domain}."
            ) from entry.error
        if entry.plugin is None:
            _log.debug("skipping eva plugin %r (%s)", entry.domain, DISABLE_ENV)
            return
        self.register(entry.plugin, entry.domain, where=where)
        self._distributions[entry.domain] = entry.distribution
        _log.debug("loaded eva plugin %s", where)

    def register(self, plugin: object, name: str, *, builtin: bool = False, where: str | None = None) -> None:
        """Register ``plugin`` as domain ``name`` (``builtin``: a fallback kept beside every domain).

        Raises:
            PluginLoadError: ``plugin`` implements a hook the contract does not have.
        """
        if self._pm.has_plugin(name):
            return
        self._pm.register(plugin, name=name)
        if builtin:
            self._builtin.add(name)
        try:
            self._pm.check_pending()
        except pluggy.PluginValidationError as error:
            self._pm.unregister(name=name)
            self._builtin.discard(name)
            raise PluginLoadError(
                f"eva plugin {where or repr(name)} is invalid: {error}. Hooks are the eva_* functions of "
                f"eva_core.hookspecs ({', '.join(hook_names())}); fix the name, or skip it with {DISABLE_ENV}={name}."
            ) from error

    def unregister(self, name: str) -> None:
        self._pm.unregister(name=name)
        self._builtin.discard(name)

    @property
    def names(self) -> list[str]:
        """Every registered plugin, in registration order (``generic`` first)."""
        return [name for name, _ in self._pm.list_name_plugin()]

    @property
    def domains(self) -> list[str]:
        """The domain plugins (not the built-in ones), sorted."""
        return sorted(name for name in self.names if name not in self._builtin)

    def choose_domain(self, model: nn.Module, requested: str | None = None) -> str:
        """The domain that serves ``model``: ``requested`` if given, else the one domain plugin that claims
        the model, else ``generic``. ``fit``, ``init``, ``apply`` and ``eva fit`` all decide this way.

        Raises:
            UnknownDomainError: ``requested`` is not installed; the message lists what is.
            AmbiguousDomainError: two plugins claim the model and nothing was requested.
        """
        if requested is not None:
            if requested not in self.names:
                raise UnknownDomainError(
                    f"EvaConfig.domain={requested!r} is not an installed eva plugin; installed: "
                    f"{sorted([*self.domains, GENERIC])}. Install the package for that domain (e.g. "
                    "`pip install eva-llm`) or pick one of those."
                )
            return requested
        claims = self.claimants(model)
        if len(claims) > 1:
            raise AmbiguousDomainError(
                f"plugins {claims} all claim {type(model).__name__}; pick one with EvaConfig(domain=...), "
                f"e.g. domain={claims[0]!r}."
            )
        return claims[0] if claims else GENERIC

    def claimants(self, model: nn.Module) -> list[str]:
        """The domain plugins that claim ``model``, sorted."""
        return [name for name in self.domains if self.hooks(name, fallbacks=False).claims(model)]

    def require_claim(self, model: nn.Module, domain: str) -> None:
        """Refuse ``model`` for ``domain`` unless that domain claims it: a domain's ``init`` calls this before
        it reads a batch or touches the model, so ``eva_vision.init(bert)`` fails at once, saying where the
        model belongs. A domain that is not installed passes (:meth:`choose_domain` names it next), and so
        does a model that already carries peft adapters.

        Raises:
            DomainMismatchError: ``domain`` does not claim ``model``; the message names the model class,
                the domain(s) that claim it and their package, or the generic path when none does.
        """
        if domain == GENERIC or domain not in self.domains or hasattr(model, "peft_config"):
            return  # a model that carries adapters is judged later, by fit and apply, which say what to pass
        if self.hooks(domain, fallbacks=False).claims(model):
            return
        others = [name for name in self.claimants(model) if name != domain]
        if others:
            where = ", ".join(f"eva_{name}.init (package {self._package(name)})" for name in others)
            fix = f"it is a model of the {others[0]!r} domain: use {where}, or eva_core.init(model, batches)"
        else:
            fix = (
                "no installed eva domain claims it: use eva_core.init(model, batches) (the generic plugin adapts "
                "every nn.Linear outside the output heads; pass target_modules=[...] to choose), or install its "
                "domain package"
            )
        raise DomainMismatchError(
            f"eva_{domain}.init(model=...) got a {type(model).__name__}, which the {domain!r} eva domain does not "
            f"serve ({self._package(domain)} claims none of its kind); {fix}."
        )

    def _package(self, domain: str) -> str:
        """The distribution that registers ``domain`` (``eva-<domain>`` when unknown)."""
        return self._distributions.get(domain, f"eva-{domain}")

    def hooks(self, domain: str, *, fallbacks: bool = True) -> DomainHooks:
        """The typed hooks of ``domain``, answered by the built-in plugins too unless ``fallbacks`` is False."""
        return DomainHooks(self, domain, fallbacks=fallbacks)

    def for_model(self, model: nn.Module, requested: str | None = None) -> DomainHooks:
        """The hooks of the domain :meth:`choose_domain` picks for ``model``."""
        return self.hooks(self.choose_domain(model, requested))

    def _only(self, domain: str, hook: str, fallbacks: bool = True) -> Any:
        """A caller of ``hook`` on ``domain`` and (with ``fallbacks``) the built-in plugins only."""
        keep = {domain, *(self._builtin if fallbacks else ())}
        others = [plugin for name, plugin in self._pm.list_name_plugin() if name not in keep]
        return self._pm.subset_hook_caller(hook, remove_plugins=others)

    def _all(self, hook: str) -> Any:
        return getattr(self._pm.hook, hook)


class DomainHooks:
    """The hooks of one domain plugin, each answered by that plugin first and then by the built-in ones
    (``generic``, and on the command line its file fallback); observers reach every plugin."""

    def __init__(self, manager: PluginManager, domain: str, *, fallbacks: bool = True) -> None:
        self.manager = manager
        self.domain = domain
        self.fallbacks = fallbacks

    def _call(self, hook: str, **kwargs: Any) -> Any:
        return self.manager._only(self.domain, hook, self.fallbacks)(**kwargs)

    def claims(self, model: nn.Module) -> bool:
        return any(self._call("eva_claims_model", model=model))

    def default_config(self, model: nn.Module) -> dict[str, Any]:
        return dict(self._call("eva_default_config", model=model) or {})

    def config(self, model: nn.Module, config: EvaConfig | None, overrides: Mapping[str, Any]) -> EvaConfig:
        """``config`` (default: this domain's :meth:`default_config`) with ``overrides`` applied.

        Raises:
            InvalidConfigError: an override names no ``EvaConfig`` field or holds an invalid value.
        """
        from ..config import EvaConfig

        base = config
        if base is None:
            defaults = self.default_config(model)
            try:
                base = EvaConfig().replace(**defaults)
            except InvalidConfigError as error:
                raise InvalidConfigError(
                    f"the {self.domain!r} eva plugin's eva_default_config returned {defaults!r}, which is invalid: "
                    f"{error} Fix the plugin, or pass config=EvaConfig(...) explicitly."
                ) from error
        return base.replace(**overrides) if overrides else base

    def lora_fields(self, model: nn.Module, targets: Sequence[str]) -> dict[str, Any]:
        """The domain's ``LoraConfig`` fields, ``modules_to_save`` without repeats (in first-seen order)."""
        fields = dict(self._call("eva_lora_fields", model=model, targets=list(targets)) or {})
        if fields.get("modules_to_save"):
            fields["modules_to_save"] = list(dict.fromkeys(fields["modules_to_save"]))
        return fields

    def target_modules(self, model: nn.Module, config: EvaConfig) -> list[str]:
        """The domain's layers to adapt; when it names none, the generic plugin's, with a
        :class:`~eva_core.errors.GenericFallbackWarning` (one per call) saying so unless the model is the
        user's own module (no model library's config), for which the generic plugin is the intended path."""
        if self.domain != GENERIC:
            own = self.manager._only(self.domain, "eva_target_modules", fallbacks=False)(model=model, config=config)
            if own or not self.fallbacks:
                return list(own or ())
        targets = list(self._call("eva_target_modules", model=model, config=config) or ())
        if targets and (self.domain != GENERIC or generic.from_a_model_library(model)):
            reason = None if self.domain == GENERIC else f"the {self.domain!r} eva plugin names no layer of it to adapt"
            warn(generic.fallback_message(model, targets, self.manager.domains, reason), GenericFallbackWarning)
        return targets

    def layers(self, model: nn.Module, config: EvaConfig) -> dict[str, nn.Module]:
        """The layers a fit measures, in model order: ``config.target_modules``, else the domain's.

        Raises:
            NoTargetLayersError: nothing is targeted, or the targets match no module.
        """
        targets = config.target_modules
        if targets is None:
            targets = tuple(self.target_modules(model, config))
            if not targets:
                raise NoTargetLayersError(
                    f"the {self.domain!r} eva plugin finds no layer to adapt in {type(model).__name__}; pass "
                    "target_modules (names or a regex from model.named_modules())."
                )
        return select_modules(model, targets)

    def rows_functions(self, layers: Mapping[str, nn.Module]) -> dict[str, RowsFn]:
        """Each layer's rows function (``eva_layer_rows``).

        Raises:
            UnsupportedLayerError: no plugin can turn a layer's inputs into rows.
        """
        functions = {}
        for name, module in layers.items():
            function = self.layer_rows(name, module)
            if function is None:
                raise UnsupportedLayerError(
                    f"target_modules selects {name!r}, a {type(module).__name__}, whose inputs no installed eva "
                    f"plugin can turn into rows (domain {self.domain!r}); target nn.Linear layers, or install the "
                    "domain package that supports this layer type."
                )
            functions[name] = function
        return functions

    def layer_rows(self, name: str, module: nn.Module) -> RowsFn | None:
        return self._call("eva_layer_rows", name=name, module=module)

    def prepare_batch(self, batch: Any, model: nn.Module, config: EvaConfig) -> PreparedBatch | None:
        return self._call("eva_prepare_batch", batch=batch, model=model, config=config)

    def cli_load_model(self, model: str, data: str, options: Mapping[str, str]) -> LoadedModel | None:
        return self._call("eva_cli_load_model", model=model, data=data, options=options)

    def cli_batches(
        self, data: str, loaded: LoadedModel, batch_size: int, rows: int | None, options: Mapping[str, str]
    ) -> Iterable[Any] | None:
        return self._call(
            "eva_cli_batches", data=data, loaded=loaded, batch_size=batch_size, rows=rows, options=options
        )

    def step_done(self, step: int, converged: int, layers: int) -> None:
        self.manager._all("eva_step_done")(step=step, converged=converged, layers=layers)

    def ranks_allocated(self, state: EvaState) -> None:
        self.manager._all("eva_ranks_allocated")(state=state)


def hook_names() -> list[str]:
    """The hooks of the contract, as plugins spell them."""
    return sorted(name for name in vars(hookspecs) if name.startswith("eva_"))


def plugin_manager(load_entry_points: bool = True) -> PluginManager:
    """A fresh :class:`PluginManager` (built on every call: no import-time global)."""
    return PluginManager(load_entry_points)
