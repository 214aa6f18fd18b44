"""The installed domains as the command line sees them: listing them, and asking the chosen one to
load a model and read a data file (``eva_cli_load_model`` / ``eva_cli_batches``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from importlib.metadata import version as dist_version
from typing import Any

import pluggy

from ..hookspecs import PROJECT, LoadedModel
from ..plugins import DISABLE_ENV, plugin_manager
from . import fallback
from .errors import MissingModelError, UnknownDomainError, UnreadableDataError

__all__ = ["GENERIC", "CliDomains", "PluginInfo", "installed_plugins"]

GENERIC = "generic"
_CLI_HOOKS = ("eva_cli_load_model", "eva_cli_batches")


@dataclass(frozen=True)
class PluginInfo:
    """One line of ``eva plugins``.

    Attributes:
        domain: the entry-point name (``EvaConfig.domain``).
        distribution: the package that registers it, and its version.
        entry_point: the module or object the entry point names.
        status: ``loaded``, ``disabled (EVA_DISABLE_PLUGINS)`` or ``failed: <error>``.
        cli_hooks: which ``eva_cli_*`` hooks it implements (what ``eva fit`` can ask it).
    """

    domain: str
    distribution: str
    version: str
    entry_point: str
    status: str
    cli_hooks: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.status.startswith("failed")


def installed_plugins() -> list[PluginInfo]:
    """Every plugin of the ``eva`` entry-point group (each imported to check it loads), after eva-core's
    built-in ``generic`` one. A plugin that fails to import is listed with its error, not raised."""
    core = PluginInfo(GENERIC, "eva-core", dist_version("eva-core"), "eva_core.plugins.generic", "built in", _CLI_HOOKS)
    infos = [core]
    skipped = {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}
    for point in sorted(entry_points(group=PROJECT), key=lambda p: p.name):
        dist = getattr(point, "dist", None)
        name, version = (dist.name, dist.version) if dist is not None else ("?", "?")
        if "*" in skipped or point.name in skipped:
            infos.append(PluginInfo(point.name, name, version, point.value, f"disabled ({DISABLE_ENV})"))
            continue
        try:
            plugin = point.load()
        except Exception as error:  # third-party import-time failures of any kind
            infos.append(PluginInfo(point.name, name, version, point.value, f"failed: {error!r}"))
            continue
        hooks = tuple(hook for hook in _CLI_HOOKS if hasattr(plugin, hook))
        infos.append(PluginInfo(point.name, name, version, point.value, "loaded", hooks))
    return infos


class CliDomains:
    """The plugin manager of one ``eva`` command, with the command line's fallback plugin added.

    Raises:
        PluginLoadError: an installed plugin fails to import (from :func:`eva_core.plugin_manager`).
    """

    def __init__(self) -> None:
        self.manager: pluggy.PluginManager = plugin_manager()
        self.manager.register(fallback, name=fallback.NAME)

    @property
    def names(self) -> list[str]:
        """The installed domains, sorted, then ``generic``."""
        found = sorted(name for name, _ in self.manager.list_name_plugin() if name not in (GENERIC, fallback.NAME))
        return [*found, GENERIC]

    def check(self, domain: str) -> str:
        """``domain`` itself if installed.

        Raises:
            UnknownDomainError: it is not; the message lists the installed domains.
        """
        if domain not in self.names:
            raise UnknownDomainError(
                f"--domain {domain!r} is not an installed eva domain; installed: {', '.join(self.names)}. "
                f"Install its package (e.g. `pip install eva-{domain}`) or pick one of those (`eva plugins`)."
            )
        return domain

    def load_model(
        self, model: str, data: str, options: Mapping[str, str], domain: str | None
    ) -> tuple[str, LoadedModel]:
        """``(domain, loaded)``: ``domain`` (or, when None, each installed domain in turn, then the
        fallback) loads ``model``.

        Raises:
            MissingModelError: no domain tried loads ``model``.
        """
        tried = [self.check(domain)] if domain is not None else self.names
        for name in tried:
            keep = [fallback.NAME] if domain is not None or name == GENERIC else []
            loaded = self._call(name, keep, "eva_cli_load_model", model=model, data=data, options=options)
            if loaded is not None:
                return name, loaded
        raise MissingModelError(
            f"MODEL={model!r}: no eva domain loads it (tried: {', '.join(tried)}); pass a local model folder, an "
            "alias a domain knows (nlu: minilm; llm: smollm2), or package.module:factory."
        )

    def batches(
        self,
        domain: str,
        data: str,
        loaded: LoadedModel,
        batch_size: int,
        rows: int | None,
        options: Mapping[str, str],
    ) -> Iterable[Any]:
        """The batches domain ``domain`` (or the fallback) reads from ``data``.

        Raises:
            UnreadableDataError: neither reads that kind of file.
        """
        found = self._call(
            domain,
            [fallback.NAME],
            "eva_cli_batches",
            data=data,
            loaded=loaded,
            batch_size=batch_size,
            rows=rows,
            options=options,
        )
        if found is None:
            raise UnreadableDataError(
                f"DATA={data!r}: domain {domain!r} does not read this kind of file; see `eva plugins` and "
                "docs/cli.md for the formats each domain reads (e.g. nlu: GLUE .tsv; llm: GSM8K .jsonl; any: .pt)."
            )
        return found

    def _call(self, domain: str, keep: list[str], hook: str, **kwargs: Any) -> Any:
        allowed = {domain, *keep}
        others = [plugin for name, plugin in self.manager.list_name_plugin() if name not in allowed]
        return self.manager.subset_hook_caller(hook, remove_plugins=others)(**kwargs)
