"""The plugin manager: one discovery of the ``eva`` entry-point group, one rule for which domain serves a
model, and a typed method per hook.

Each hook is called through a method of :class:`DomainHooks` (as tox wraps ``pm.hook.tox_*``), so a call
site reads like a function call and a renamed hook fails the type check; ``check_pending`` makes a
plugin with a misspelt ``eva_*`` implementation fail when it is registered, not silently never run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from .. import hookspecs
from ..errors import (
    AmbiguousDomainError,
    DomainMismatchError,
    PluginLoadError,
    UnknownDomainError,
)
from . import generic
from .domain_hooks import GENERIC, DomainHooks

if TYPE_CHECKING:
    from torch import nn


__all__ = ["DISABLE_ENV", "GENERIC", "DomainHooks", "PluginEntry", "PluginManager", "discover", "plugin_manager"]

_log = logging.getLogger(__name__)

DISABLE_ENV = "EVA_DISABLE_PLUGINS"
"""Comma-separated entry-point names to skip (``*`` skips all); e.g. ``EVA_DISABLE_PLUGINS=vision``."""


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
        the model, else ``generic``. ``fit``, ``init``, ``apply`` and ``eva-lora fit`` all decide this way.

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

    def hooks(self, domain: str, *, fallbacks: bool = True) -> DomainHooks[PluginManager]:
        """The typed hooks of ``domain``, answered by the built-in plugins too unless ``fallbacks`` is False."""
        return DomainHooks(self, domain, fallbacks=fallbacks)

    def for_model(self, model: nn.Module, requested: str | None = None) -> DomainHooks[PluginManager]:
        """The hooks of the domain :meth:`choose_domain` picks for ``model``."""
        return self.hooks(self.choose_domain(model, requested))

    def _only(self, domain: str, hook: str, fallbacks: bool = True) -> Any:
        """A caller of ``hook`` on ``domain`` and (with ``fallbacks``) the built-in plugins only."""
        keep = {domain, *(self._builtin if fallbacks else ())}
        others = [plugin for name, plugin in self._pm.list_name_plugin() if name not in keep]
        return self._pm.subset_hook_caller(hook, remove_plugins=others)

    def _all(self, hook: str) -> Any:
        return getattr(self._pm.hook, hook)


def hook_names() -> list[str]:
    """The hooks of the contract, as plugins spell them."""
    return sorted(name for name in vars(hookspecs) if name.startswith("eva_"))


def plugin_manager(load_entry_points: bool = True) -> PluginManager:
    """A fresh :class:`PluginManager` (built on every call: no import-time global)."""
    return PluginManager(load_entry_points)
