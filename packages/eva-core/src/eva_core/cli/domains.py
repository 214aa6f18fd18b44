"""The installed domains as the command line sees them: listing them, loading a model and reading a data
file through the one plugin manager ``fit`` uses, with the command line's file fallback added."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from typing import TYPE_CHECKING, Any, TypeVar

from ..contract import LoadedModel
from ..errors import InvalidConfigError, MissingModelError, UnknownDomainError, UnreadableDataError
from ..plugins import GENERIC, DomainHooks, PluginManager, discover, plugin_manager
from . import fallback

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CliDomains", "DomainOptions", "PluginInfo", "installed_plugins"]

_CLI_HOOKS = ("eva_cli_load_model", "eva_cli_batches")
_D = TypeVar("_D", int, None)


@dataclass(frozen=True)
class PluginInfo:
    """One line of ``eva-lora plugins``.

    Attributes:
        domain: the entry-point name (``EvaConfig.domain``).
        distribution: the package that registers it, and its version.
        entry_point: the module or object the entry point names.
        status: ``loaded``, ``disabled (EVA_DISABLE_PLUGINS)`` or ``failed: <error>``.
        cli_hooks: which ``eva_cli_*`` hooks it implements (what ``eva-lora fit`` can ask it).
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
    """Every plugin of the ``eva`` entry-point group (as :func:`eva_core.plugins.discover` finds them), after
    eva-core's built-in ``generic`` one. A plugin that fails to import is listed with its error, not raised."""
    core = PluginInfo(GENERIC, "eva-core", dist_version("eva-core"), "eva_core.plugins.generic", "built in", _CLI_HOOKS)
    infos = [core]
    for entry in discover():
        hooks = tuple(hook for hook in _CLI_HOOKS if hasattr(entry.plugin, hook))
        infos.append(PluginInfo(entry.domain, entry.distribution, entry.version, entry.value, entry.status, hooks))
    return infos


class DomainOptions(Mapping[str, str]):
    """``eva-lora fit``'s ``--option KEY=VALUE`` pairs as the domains read them, recording every key they ask for
    (``options[key]``, ``options.get(key)``, ``key in options``), so that a key no domain reads (a
    misspelling) is an error rather than silently ignored. Iterating marks every key read."""

    def __init__(self, given: Mapping[str, str]) -> None:
        self.given = dict(given)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.given[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return key in self.given

    def __iter__(self) -> Iterator[str]:
        self.asked.update(self.given)
        return iter(self.given)

    def __len__(self) -> int:
        return len(self.given)

    @staticmethod
    def integer(
        options: Mapping[str, str],
        key: str,
        default: _D,
        *,
        minimum: int = 1,
        maximum: int | None = None,
        example: int | None = None,
    ) -> int | _D:
        """``--option key=N``: an integer in [``minimum``, ``maximum``] (no upper bound if None), or
        ``default`` if the key is not given. A static method, so that a domain's hooks also take a plain
        dict (``DomainOptions.integer(options, ...)``); with a :class:`DomainOptions` the key is marked read.

        Raises:
            InvalidConfigError: the value is not such an integer (``str.isdigit`` also passes "²", which
                ``int`` refuses); the message names the option, the value, the valid range and an example
                (``example``, else ``default``).
        """
        value = options.get(key)
        if value is None:
            return default
        with contextlib.suppress(ValueError):
            number = int(value)
            if number >= minimum and (maximum is None or number <= maximum):
                return number
        valid = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        shown = default if example is None else example
        raise InvalidConfigError(f"--option {key}={value!r} is invalid; use an integer {valid}, e.g. {key}={shown}")

    def check_read(self, domain: str) -> None:
        """Call once the domain loaded the model and its batches.

        Raises:
            InvalidConfigError: a given key was never read; the message lists the keys the domain asked for.
        """
        unread = [key for key in self.given if key not in self.asked]
        if unread:
            asked = ", ".join(sorted(self.asked)) or "none"
            raise InvalidConfigError(
                f"--option {unread[0]}={self.given[unread[0]]!r}: domain {domain!r} has no setting {unread[0]!r} "
                f"for this model and data (the settings it reads here: {asked}); check the spelling."
            )


class CliDomains:
    """The plugin manager of one ``eva-lora`` command, with the command line's fallback plugin added.

    Raises:
        PluginLoadError: an installed plugin fails to import (from :func:`eva_core.plugin_manager`).
    """

    def __init__(self) -> None:
        self.manager: PluginManager = plugin_manager()
        self.manager.register(fallback, fallback.NAME, builtin=True)

    @property
    def names(self) -> list[str]:
        """The installed domains, sorted, then ``generic``."""
        return [*self.manager.domains, GENERIC]

    def check(self, domain: str) -> str:
        """``domain`` itself if installed.

        Raises:
            UnknownDomainError: it is not; the message lists the installed domains.
        """
        if domain not in self.names:
            raise UnknownDomainError(
                f"--domain {domain!r} is not an installed eva domain; installed: {', '.join(self.names)}. "
                f"Install its package (e.g. `pip install eva-{domain}`) or pick one of those (`eva-lora plugins`)."
            )
        return domain

    def load_model(self, model: str, data: str, options: Mapping[str, str], domain: str | None) -> LoadedModel:
        """The model ``domain`` (or, when None, the first installed domain that knows ``model``, then the
        fallback: ``module:factory``) loads.

        Raises:
            MissingModelError: no domain tried loads ``model``.
        """
        tried = [self.check(domain)] if domain is not None else self.names
        for name in tried:
            fallbacks = domain is not None or name == GENERIC
            loaded = self.manager.hooks(name, fallbacks=fallbacks).cli_load_model(model, data, options)
            if loaded is not None:
                return loaded
        raise MissingModelError(
            f"MODEL={model!r}: no eva domain loads it (tried: {', '.join(tried)}); pass a local model folder, an "
            "alias a domain knows (nlu: minilm; llm: smollm2), or package.module:factory."
        )

    def example(
        self, model: str, batch_size: int, length: int, options: Mapping[str, str], domain: str | None
    ) -> tuple[nn.Module, Any]:
        """The model ``domain`` (or, when None, the first installed domain that knows ``model``) builds
        without weights, and an example batch of ``batch_size`` x ``length`` (``eva-lora plan``).

        Raises:
            MissingModelError: no domain tried builds ``model``.
        """
        tried = [self.check(domain)] if domain is not None else self.manager.domains
        for name in tried:
            built = self.manager.hooks(name, fallbacks=False).cli_example(model, batch_size, length, options)
            if built is not None:
                return built
        raise MissingModelError(
            f"MODEL={model!r}: no eva domain builds it without weights for `eva-lora plan` (tried: "
            f"{', '.join(tried) or 'none installed'}); pass a local model folder or its config.json (llm: a causal "
            "LM's), or plan in Python with eva_core.plan(model, batch)."
        )

    def for_model(self, loaded: LoadedModel, domain: str | None) -> DomainHooks:
        """The hooks of the domain that fits ``loaded.model``: ``domain``, else the one that claims it
        (the rule ``eva_core.fit`` follows)."""
        return self.manager.for_model(loaded.model, domain)

    def batches(
        self,
        hooks: DomainHooks,
        data: str,
        loaded: LoadedModel,
        batch_size: int,
        rows: int | None,
        options: Mapping[str, str],
    ) -> Iterable[Any]:
        """The batches domain ``hooks.domain`` (or the fallback) reads from ``data``.

        Raises:
            UnreadableDataError: neither reads that kind of file.
        """
        found = hooks.cli_batches(data, loaded, batch_size, rows, options)
        if found is None:
            raise UnreadableDataError(
                f"DATA={data!r}: domain {hooks.domain!r} does not read this kind of file; see `eva-lora plugins` for "
                "the installed domains (nlu: GLUE .tsv/.csv/.jsonl; llm: GSM8K-style .jsonl; vision: IDX, .npy or .pt "
                "images; rl: minari datasets; any domain: a .pt file of batches)."
            )
        return found
