"""The typed hooks of one domain: a method per hook of the contract, so that a call site reads like a
function call and a renamed hook fails the type check. :class:`~eva_core.plugins.PluginManager` hands
them out (``manager.hooks(domain)``, ``manager.for_model(model)``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..errors import GenericFallbackWarning, InvalidConfigError, NoTargetLayersError, UnsupportedLayerError, warn
from ..targets import select_modules
from . import generic

if TYPE_CHECKING:
    from torch import nn

    from ..config import EvaConfig
    from ..contract import LoadedModel, PreparedBatch, RowsFn
    from ..state import EvaState

__all__ = ["GENERIC", "DomainHooks", "HookCallers"]

GENERIC = "generic"
"""The built-in plugin every domain falls back to (``EvaConfig.domain="generic"`` picks it alone)."""


class HookCallers(Protocol):
    """What :class:`DomainHooks` asks of the :class:`~eva_core.plugins.PluginManager` that made it (a
    protocol, so that this module need not import the manager, which imports it). ``DomainHooks.manager``
    is the manager itself: ``PluginManager.hooks`` returns ``DomainHooks[PluginManager]``."""

    @property
    def domains(self) -> list[str]: ...

    def _only(self, domain: str, hook: str, fallbacks: bool = True) -> Any: ...

    def _all(self, hook: str) -> Any: ...


M = TypeVar("M", bound=HookCallers)


class DomainHooks(Generic[M]):
    """The hooks of one domain plugin, each answered by that plugin first and then by the built-in ones
    (``generic``, and on the command line its file fallback); observers reach every plugin."""

    def __init__(self, manager: M, domain: str, *, fallbacks: bool = True) -> None:
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

    def cli_example(
        self, model: str, batch_size: int, length: int, options: Mapping[str, str]
    ) -> tuple[nn.Module, Any] | None:
        return self._call("eva_cli_example", model=model, batch_size=batch_size, length=length, options=options)

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
