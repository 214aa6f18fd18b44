"""Finding, loading and calling the plugins of the ``eva`` entry-point group."""

from __future__ import annotations

from .manager import DISABLE_ENV, GENERIC, DomainHooks, PluginEntry, PluginManager, discover, plugin_manager

__all__ = ["DISABLE_ENV", "GENERIC", "DomainHooks", "PluginEntry", "PluginManager", "discover", "plugin_manager"]
