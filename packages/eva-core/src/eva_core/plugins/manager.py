"""Building the plugin manager and choosing which domain plugin serves a model."""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pluggy

from .. import hookspecs
from ..errors import AmbiguousDomainError, PluginLoadError
from . import generic

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DISABLE_ENV", "DomainHooks", "plugin_manager"]

_log = logging.getLogger(__name__)

DISABLE_ENV = "EVA_DISABLE_PLUGINS"
"""Comma-separated entry-point names to skip (``*`` skips all); e.g. ``EVA_DISABLE_PLUGINS=vision``."""

GENERIC = "generic"


def plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A fresh manager with the hook specs, the built-in generic plugin and, unless told not to, every
    plugin of the ``eva`` entry-point group that ``EVA_DISABLE_PLUGINS`` does not name.

    Raises:
        PluginLoadError: an entry point failed to import; the message names it and its distribution.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(generic, name=GENERIC)
    if load_entry_points:
        _load_entry_points(manager)
    return manager


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    skipped = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}
    for point in entry_points(group=hookspecs.PROJECT):
        if "*" in skipped or point.name in skipped:
            _log.debug("skipping eva plugin %r (%s)", point.name, DISABLE_ENV)
            continue
        if manager.has_plugin(point.name):
            continue
        dist = getattr(point, "dist", None)
        where = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
        try:
            plugin = point.load()
        except Exception as error:  # any import-time failure of third-party code
            raise PluginLoadError(
                f"eva plugin {point.name!r} ({point.value}, from {where}) failed to load: {error!r}. "
                f"Fix or uninstall that package, or skip it with {DISABLE_ENV}={point.name}."
            ) from error
        manager.register(plugin, name=point.name)
        _log.debug("loaded eva plugin %r from %s", point.name, where)


class DomainHooks:
    """Calls the hooks of one domain plugin plus the generic fallback, and observers of all plugins.

    Args:
        manager: from :func:`plugin_manager`.
        model: the model being fitted (domain plugins are asked whether they claim it).
        domain: a plugin name to use, or None to auto-detect.

    Raises:
        AmbiguousDomainError: two plugins claim the model and ``domain`` is None.
        ValueError: ``domain`` names no registered plugin.
    """

    def __init__(self, manager: pluggy.PluginManager, model: nn.Module, domain: str | None = None) -> None:
        self.manager = manager
        plugins = dict(manager.list_name_plugin())
        if domain is None:
            domain = _claiming_domain(manager, plugins, model)
        elif domain not in plugins:
            raise ValueError(
                f"EvaConfig.domain={domain!r} is not an installed eva plugin; installed: {sorted(plugins)}. "
                "Install the package for that domain (e.g. `pip install eva-llm`) or pick one of those."
            )
        self.domain = domain
        self._others = [plugin for name, plugin in plugins.items() if name not in (domain, GENERIC)]

    def call(self, hook: str, /, **kwargs: Any) -> Any:
        """Call ``hook`` on the domain plugin and the generic one only."""
        return self.manager.subset_hook_caller(hook, remove_plugins=self._others)(**kwargs)

    def notify(self, hook: str, /, **kwargs: Any) -> None:
        """Call observer ``hook`` on every registered plugin."""
        getattr(self.manager.hook, hook)(**kwargs)


def _claiming_domain(manager: pluggy.PluginManager, plugins: dict[str, Any], model: nn.Module) -> str:
    claims = []
    for name in plugins:
        if name == GENERIC:
            continue
        others = [p for n, p in plugins.items() if n != name]
        answers = manager.subset_hook_caller("eva_claims_model", remove_plugins=others)(model=model)
        if any(answers):
            claims.append(name)
    if len(claims) > 1:
        raise AmbiguousDomainError(
            f"plugins {claims} all claim {type(model).__name__}; pick one with EvaConfig(domain=...), "
            f"e.g. domain={claims[0]!r}."
        )
    return claims[0] if claims else GENERIC
