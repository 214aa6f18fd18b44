"""The plugin contract: domain choice, hook precedence, observers, and entry-point loading."""

from __future__ import annotations

import copy
import sys
import types
from importlib.metadata import EntryPoint

import pytest
import torch

from eva_core import PreparedBatch, fit, hookimpl, plugin_manager
from eva_core.errors import AmbiguousDomainError, InvalidConfigError, PluginLoadError
from eva_core.plugins import manager

MODULE = "eva_core_test_fake_plugins"
QUICK = {"rank": 2, "tau": 0.0, "min_steps": 2, "max_steps": 2, "progress": False}


@pytest.fixture
def install(monkeypatch):
    """``install(name, plugin)`` makes ``plugin`` an entry point of the ``eva`` group named ``name``;
    ``install(name, value=...)`` adds a raw entry point. Everything is removed when the test ends."""
    points: list[EntryPoint] = []
    module = types.ModuleType(MODULE)

    def entry_points(group: str) -> list[EntryPoint]:
        return [point for point in points if point.group == group]

    def add(name: str, plugin: object = None, value: str | None = None) -> None:
        if plugin is not None:
            setattr(module, name, plugin)
        points.append(EntryPoint(name=name, value=value or f"{MODULE}:{name}", group="eva"))

    sys.modules[MODULE] = module
    monkeypatch.setattr(manager, "entry_points", entry_points)
    monkeypatch.delenv(manager.DISABLE_ENV, raising=False)
    try:
        yield add
    finally:
        points.clear()
        sys.modules.pop(MODULE, None)


class Domain:
    """A domain plugin: claims the model (or not), targets ``targets``, records what it was asked."""

    def __init__(self, claims: bool = True, targets: list[str] | None = None) -> None:
        self.claims = claims
        self.targets = targets
        self.steps: list[tuple[int, int, int]] = []
        self.states: list[object] = []

    @hookimpl
    def eva_claims_model(self, model):
        return self.claims

    @hookimpl
    def eva_target_modules(self, model, config):
        return self.targets

    @hookimpl
    def eva_step_done(self, step, converged, layers):
        self.steps.append((step, converged, layers))

    @hookimpl
    def eva_ranks_allocated(self, state):
        self.states.append(state)


class Sample:
    """A batch type only the domain plugin knows."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids


class FirstTokenOnly(Domain):
    """Feeds ``Sample`` batches and dict batches, counting only the first token of each sequence."""

    @hookimpl
    def eva_prepare_batch(self, batch, model, config):
        ids = batch.ids if isinstance(batch, Sample) else batch["input_ids"]
        mask = torch.zeros(ids.shape, dtype=torch.bool)
        mask[:, 0] = True
        return PreparedBatch(args=(ids,), row_mask=mask)


def test_a_claiming_plugin_becomes_the_domain(install, model, batches) -> None:
    install("fake", Domain(targets=["blocks.0.up", "head"]))
    install("bystander", Domain(claims=False, targets=["blocks.1.o"]))
    state = fit(model, batches, **QUICK)
    assert state.extra["domain"] == "fake"
    assert list(state.layers) == ["blocks.0.up", "head"]  # the domain's targets, not the generic ones


def test_without_a_claim_the_generic_plugin_serves(install, model, batches) -> None:
    install("bystander", Domain(claims=False, targets=["blocks.1.o"]))
    state = fit(model, batches, **QUICK)
    assert state.extra["domain"] == "generic"
    assert len(state.layers) == 13  # every nn.Linear


def test_two_claims_are_ambiguous_unless_a_domain_is_given(install, model, batches) -> None:
    install("alpha", Domain(targets=["head"]))
    install("beta", Domain(targets=["blocks.0.up"]))
    with pytest.raises(AmbiguousDomainError) as info:
        fit(model, batches, **QUICK)
    message = str(info.value)
    assert "plugins ['alpha', 'beta'] all claim TinyModel" in message
    assert "EvaConfig(domain=...), e.g. domain='alpha'" in message
    state = fit(model, batches, domain="beta", **QUICK)
    assert state.extra["domain"] == "beta"
    assert list(state.layers) == ["blocks.0.up"]


def test_unknown_domain_lists_installed(install, model, batches) -> None:
    install("alpha", Domain(claims=False))
    with pytest.raises(
        ValueError, match=r"EvaConfig.domain='vision' is not an installed eva plugin; installed: \['alpha', 'generic'\]"
    ):
        fit(model, batches, domain="vision", **QUICK)


def test_domain_prepare_batch_overrides_the_generic_one(install, model, make_batches) -> None:
    install("tokens", FirstTokenOnly(targets=["blocks.0.q", "head"]))
    batches = make_batches(2, size=3)  # dicts the generic plugin would also take, with its own mask
    state = fit(model, batches, **QUICK)
    assert state.layers["head"].rows == 2 * 3  # one row per sequence: the plugin's mask won
    samples = [Sample(b["input_ids"]) for b in batches]  # a type only the plugin knows
    assert fit(model, samples, **QUICK).layers["blocks.0.q"].rows == 2 * 3


def test_a_bystander_plugin_is_not_asked_to_prepare_batches(install, model, batches) -> None:
    install("tokens", FirstTokenOnly(claims=False))
    state = fit(model, batches, target_modules=["head"], **QUICK)
    kept = sum(int(((b["attention_mask"] != 0) & (b["labels"] != -100)).sum()) for b in batches[:2])
    assert state.layers["head"].rows == kept  # the generic plugin's mask


def test_domain_layer_rows_override(install, model, batches) -> None:
    class LastToken(Domain):
        @hookimpl
        def eva_layer_rows(self, name, module):
            return lambda layer_input, mask: (layer_input[:, -1], None)  # (B, d_in)

    install("last", LastToken(targets=["blocks.1.up"]))
    state = fit(model, batches, **QUICK)
    assert state.layers["blocks.1.up"].rows == 2 * 4


def test_observers_are_called(install, model, make_batches) -> None:
    domain, bystander = Domain(targets=["blocks.0.q", "blocks.0.k", "head"]), Domain(claims=False)
    install("fake", domain)
    install("bystander", bystander)
    state = fit(model, make_batches(5), rank=2, tau=0.0, min_steps=3, max_steps=5, progress=False)
    # q and k share one input; everything converges at min_steps=3
    assert domain.steps == [(1, 0, 3), (2, 0, 3), (3, 3, 3)]
    assert bystander.steps == domain.steps
    assert domain.states == [state] and bystander.states == [state]
    assert domain.states[0] is state
    assert state.extra["history"] == [{"step": s, "converged": c} for s, c, _ in domain.steps]


def test_entry_point_that_fails_to_import(install, model, batches) -> None:
    install("broken", value="nonexistent_module_xyz:plugin")
    with pytest.raises(PluginLoadError) as info:
        fit(model, batches, **QUICK)
    message = str(info.value)
    assert "eva plugin 'broken' (nonexistent_module_xyz:plugin, from an unknown distribution) failed to load" in message
    assert "No module named 'nonexistent_module_xyz'" in message
    assert "EVA_DISABLE_PLUGINS=broken" in message  # the fix
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_entry_point_with_a_missing_attribute(install) -> None:
    install("hollow", value=f"{MODULE}:not_there")
    with pytest.raises(PluginLoadError, match="eva plugin 'hollow'"):
        plugin_manager()


@pytest.mark.parametrize("skip", ["broken", "*", " other , broken "])
def test_disabled_plugins_are_skipped(install, monkeypatch, model, batches, skip: str) -> None:
    install("broken", value="nonexistent_module_xyz:plugin")
    install("fake", Domain(claims=False))
    monkeypatch.setenv("EVA_DISABLE_PLUGINS", skip)
    names = set(plugin_manager().names)
    assert "broken" not in names
    assert ("fake" in names) == (skip != "*")
    assert fit(model, batches, **QUICK).steps == 2


def test_manager_without_entry_points(install) -> None:
    install("broken", value="nonexistent_module_xyz:plugin")
    names = plugin_manager(load_entry_points=False).names
    assert names == ["generic"]


def test_every_fit_builds_a_fresh_manager(install, model, batches) -> None:
    plugin = Domain(targets=["head"])
    install("fake", plugin)
    fit(model, batches, **QUICK)
    fit(model, batches, **QUICK)
    assert [step for step, _, _ in plugin.steps] == [1, 2, 1, 2]
    assert plugin_manager(load_entry_points=False).names == ["generic"]


def test_a_misspelt_hook_fails_when_the_plugin_loads(install) -> None:
    class Misspelt:
        @hookimpl
        def eva_target_module(self, model, config):  # the contract's hook is eva_target_modules
            return ["head"]

    install("typo", Misspelt())
    with pytest.raises(PluginLoadError) as info:
        plugin_manager()
    message = str(info.value)
    assert "eva plugin 'typo'" in message and "eva_target_module" in message
    assert "eva_target_modules" in message  # the hooks that exist, so the fix is visible
    assert "EVA_DISABLE_PLUGINS=typo" in message


class Defaults(Domain):
    """A domain with its own EvaConfig and LoraConfig defaults."""

    def __init__(self, defaults: dict, lora: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.defaults, self.lora = defaults, lora or {}

    @hookimpl
    def eva_default_config(self, model):
        return self.defaults

    @hookimpl
    def eva_lora_fields(self, model, targets):
        return self.lora


def test_the_domain_supplies_the_default_config_and_overrides_win(install, model, batches) -> None:
    install("fake", Defaults({"rank": 3, "rho": 1.0, "whiten": True}, targets=["blocks.0.up", "blocks.1.up"]))
    state = fit(model, batches, tau=0.0, max_steps=2, progress=False)
    assert (state.config.rank, state.config.rho, state.config.whiten) == (3, 1.0, True)
    assert state.ranks == {"blocks.0.up": 3, "blocks.1.up": 3}
    assert fit(model, batches, rank=2, tau=0.0, max_steps=2, progress=False).config.rank == 2  # keyword wins


def test_an_explicit_config_is_used_as_given(install, model, batches) -> None:
    from eva_core import EvaConfig

    install("fake", Defaults({"rank": 3, "whiten": True}, targets=["head"]))
    state = fit(model, batches, EvaConfig(rank=2, tau=0.0, max_steps=2, progress=False))
    assert (state.config.rank, state.config.whiten) == (2, False)


def test_an_invalid_domain_default_names_the_plugin(install, model, batches) -> None:
    install("fake", Defaults({"rnak": 3}, targets=["head"]))
    with pytest.raises(InvalidConfigError, match=r"the 'fake' eva plugin's eva_default_config returned \{'rnak': 3\}"):
        fit(model, batches, **QUICK)


def test_apply_takes_the_domain_lora_fields_unless_a_lora_config_is_given(install, model, batches) -> None:
    from peft import LoraConfig

    from eva_core import apply

    install("fake", Defaults({}, {"modules_to_save": ["head"], "lora_dropout": 0.25}, targets=["blocks.0.up"]))
    state = fit(model, batches, **QUICK)
    peft_model = apply(copy.deepcopy(model), state)
    config = peft_model.peft_config["default"]
    assert (list(config.modules_to_save), config.lora_dropout, config.lora_alpha) == (["head"], 0.25, 2)
    own = apply(copy.deepcopy(model), state, LoraConfig(r=2, lora_alpha=4)).peft_config["default"]
    assert (own.modules_to_save, own.lora_dropout, own.lora_alpha) == (None, 0.0, 4)


def test_init_is_fit_then_apply_with_the_domain_defaults(install, model, batches) -> None:
    from eva_core import init

    install("fake", Defaults({"rank": 3, "rho": 1.0}, {"modules_to_save": ["head"]}, targets=["blocks.0.up"]))
    peft_model = init(copy.deepcopy(model), batches, tau=0.0, max_steps=2, progress=False)
    assert peft_model.eva_state.ranks == {"blocks.0.up": 3}
    assert list(peft_model.peft_config["default"].modules_to_save) == ["head"]


def test_a_state_from_a_domain_not_installed_here_warns_on_apply(install, model, batches) -> None:
    from eva_core import EvaWarning, apply

    install("fake", Domain(targets=["head"]))
    state = fit(model, batches, **QUICK)
    state.extra["domain"] = "elsewhere"
    with pytest.warns(EvaWarning, match="fitted with the eva domain 'elsewhere', which is not installed here"):
        apply(copy.deepcopy(model), state)
