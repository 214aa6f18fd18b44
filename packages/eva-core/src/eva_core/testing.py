"""A contract test suite every domain package subclasses (it needs pytest: ``pip install 'eva-core[testing]'``).

Subclass :class:`PluginContract` in a test module of the domain package, give it the three fixtures
below, and pytest runs every check against that plugin, model and data::

    class TestVisionContract(PluginContract):
        domain = "vision"

        @pytest.fixture
        def model(self): ...
        @pytest.fixture
        def batches(self): ...          # a list of at least two batches
        @pytest.fixture
        def plugin(self): return eva_vision.plugin

The fit is applied with the domain's own ``LoraConfig`` fields (``eva_lora_fields``); override the
``lora_config`` fixture to apply with another ``LoraConfig``.

``run_cli`` and ``assert_one_line_error`` drive the ``eva-lora`` command line in a subprocess, as a user
would, for the command-line tests of eva-core and of the domains that add to it.

The checks: the plugin claims the model (unless ``domain`` is ``"generic"``), its default ``EvaConfig``
and ``LoraConfig`` fields are valid (heads name real modules), it names existing layers, gives each a rows
function, prepares every batch into inputs the model accepts, and a fit + apply leaves the base weights
bit-identical with a step-0 output equal to the base model's.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from peft import LoraConfig
from torch import nn

from eva_core import EvaConfig, PreparedBatch, apply, fit, plugin_manager  # the contract tests use the public API
from eva_core.errors import MissingExtraError
from eva_core.plugins import DISABLE_ENV, DomainHooks

try:
    import pytest
except ImportError as error:  # pytest is the `testing` extra's, not a dependency of the library
    raise MissingExtraError(
        "eva_core.testing is a pytest suite and pytest is not installed: pip install 'eva-core[testing]'"
    ) from error

__all__ = ["PluginContract", "assert_one_line_error", "model_output", "run_cli"]


def model_output(model: nn.Module, prepared: PreparedBatch) -> torch.Tensor:
    """The first tensor of ``model(*args, **kwargs)`` (logits, last hidden state, or the output itself)."""
    out: Any = model(*prepared.args, **prepared.kwargs)
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) or hasattr(out, "values"):
        out = list(out.values())
    return next(item for item in out if isinstance(item, torch.Tensor))


class PluginContract:
    """Checks every eva plugin must pass. Subclasses provide ``model``, ``batches`` and ``plugin``."""

    domain: ClassVar[str] = "generic"
    fit_overrides: ClassVar[dict[str, Any]] = {"rank": 2, "tau": 0.0, "max_steps": 3, "min_steps": 2, "progress": False}

    @pytest.fixture
    def hooks(self, model: nn.Module, plugin: object) -> DomainHooks:
        manager = plugin_manager(load_entry_points=False)
        if self.domain != "generic":
            manager.register(plugin, self.domain)
        return manager.for_model(model)

    @pytest.fixture
    def lora_config(self, model: nn.Module) -> LoraConfig | None:
        """The ``LoraConfig`` the fit is applied with (``None``: eva-core's default)."""
        return None

    @pytest.fixture
    def config(self) -> EvaConfig:
        return EvaConfig(domain=self.domain, **self.fit_overrides)

    def test_claims_model(self, hooks: DomainHooks) -> None:
        assert hooks.domain == self.domain

    def test_default_config_is_valid(self, hooks: DomainHooks, model: nn.Module) -> None:
        defaults = hooks.default_config(model)
        assert hooks.config(model, None, {}) == EvaConfig(**defaults)  # every key an EvaConfig field, valid values

    def test_lora_fields_are_valid(self, hooks: DomainHooks, model: nn.Module, config: EvaConfig) -> None:
        fields = hooks.lora_fields(model, hooks.target_modules(model, config))
        LoraConfig(r=2, **fields)  # every key a LoraConfig field peft accepts
        heads = fields.get("modules_to_save") or []
        names = dict(model.named_modules())
        assert all(head in names for head in heads), f"modules_to_save names no module: {heads}"

    def test_targets_exist(self, hooks: DomainHooks, model: nn.Module, config: EvaConfig) -> None:
        targets = hooks.target_modules(model, config)
        names = dict(model.named_modules())
        assert targets, "the plugin targets no layer"
        missing = [t for t in targets if t not in names]
        assert not missing, f"targets not in model.named_modules(): {missing[:5]}"

    def test_every_target_has_rows(self, hooks: DomainHooks, model: nn.Module, config: EvaConfig) -> None:
        modules = dict(model.named_modules())
        for name in hooks.target_modules(model, config):
            assert hooks.layer_rows(name, modules[name]) is not None, name

    def test_prepares_batches(
        self, hooks: DomainHooks, model: nn.Module, batches: list[Any], config: EvaConfig
    ) -> None:
        assert len(batches) >= 2, "give the contract at least two batches"
        for batch in batches:
            prepared = hooks.prepare_batch(batch, model, config)
            assert isinstance(prepared, PreparedBatch)
            if prepared.row_mask is not None:
                assert prepared.row_mask.dtype == torch.bool
            with torch.no_grad():
                model_output(model.eval(), prepared)

    def test_fit_apply_keeps_base_and_output(
        self,
        hooks: DomainHooks,
        model: nn.Module,
        batches: list[Any],
        config: EvaConfig,
        lora_config: LoraConfig | None,
    ) -> None:
        model.eval()
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        prepared = hooks.prepare_batch(batches[0], model, config)
        assert prepared is not None, "the plugin cannot prepare the first batch"
        with torch.no_grad():
            reference = model_output(model, prepared)
        state = fit(model, batches, config, plugins=hooks.manager)
        assert state.steps >= 1
        assert sum(state.ranks.values()) == config.rank * len(state.ranks)
        peft_model = apply(copy.deepcopy(model), state, lora_config, plugins=hooks.manager)
        with torch.no_grad():
            adapted = model_output(peft_model.get_base_model(), prepared)
        torch.testing.assert_close(adapted, reference, rtol=0, atol=0)
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "fit changed a parameter or buffer"


def run_cli(
    *args: str, domains: bool = False, cwd: Path | None = None, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m eva_core.cli *args``; ``domains`` lets installed domain plugins load."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if domains:
        env.pop(DISABLE_ENV, None)
    else:
        env[DISABLE_ENV] = "*"
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "eva_core.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The CLI failed with exactly one ``eva-lora: error:`` line (no traceback) containing every needle."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("eva-lora: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
