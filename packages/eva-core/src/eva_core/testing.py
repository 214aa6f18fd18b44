"""A contract test suite every domain package subclasses (``pytest`` is needed to use it).

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

Override the ``lora_config`` fixture when the domain's layers need their own ``LoraConfig`` (GPT-2's
``Conv1D`` needs ``fan_in_fan_out=True``).

``run_cli`` and ``assert_one_line_error`` drive the ``eva`` command line in a subprocess, as a user
would, for the command-line tests of eva-core and of the domains that add to it.

The checks: the plugin claims the model (unless ``domain`` is ``"generic"``), names existing layers,
gives each a rows function, prepares every batch into inputs the model accepts, and a fit + apply
leaves the base weights bit-identical with a step-0 output equal to the base model's.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from peft import LoraConfig
from torch import nn

from .adapters import apply
from .config import EvaConfig
from .fitting import fit
from .hookspecs import PreparedBatch
from .plugins import DomainHooks, plugin_manager
from .plugins.manager import DISABLE_ENV

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
            manager.register(plugin, name=self.domain)
        return DomainHooks(manager, model)

    @pytest.fixture
    def lora_config(self, model: nn.Module) -> LoraConfig | None:
        """The ``LoraConfig`` the fit is applied with (``None``: eva-core's default)."""
        return None

    @pytest.fixture
    def config(self) -> EvaConfig:
        return EvaConfig(domain=self.domain, **self.fit_overrides)

    def test_claims_model(self, hooks: DomainHooks) -> None:
        assert hooks.domain == self.domain

    def test_targets_exist(self, hooks: DomainHooks, model: nn.Module, config: EvaConfig) -> None:
        targets = hooks.call("eva_target_modules", model=model, config=config)
        names = dict(model.named_modules())
        assert targets, "the plugin targets no layer"
        missing = [t for t in targets if t not in names]
        assert not missing, f"targets not in model.named_modules(): {missing[:5]}"

    def test_every_target_has_rows(self, hooks: DomainHooks, model: nn.Module, config: EvaConfig) -> None:
        modules = dict(model.named_modules())
        for name in hooks.call("eva_target_modules", model=model, config=config):
            assert hooks.call("eva_layer_rows", name=name, module=modules[name]) is not None, name

    def test_prepares_batches(
        self, hooks: DomainHooks, model: nn.Module, batches: list[Any], config: EvaConfig
    ) -> None:
        assert len(batches) >= 2, "give the contract at least two batches"
        for batch in batches:
            prepared = hooks.call("eva_prepare_batch", batch=batch, model=model, config=config)
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
        plugin: object,
        lora_config: LoraConfig | None,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr("eva_core.fitting.plugin_manager", lambda: hooks.manager)
        model.eval()
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        prepared = hooks.call("eva_prepare_batch", batch=batches[0], model=model, config=config)
        with torch.no_grad():
            reference = model_output(model, prepared)
        state = fit(model, batches, config)
        assert state.steps >= 1
        assert sum(state.ranks.values()) == config.rank * len(state.ranks)
        peft_model = apply(copy.deepcopy(model), state, lora_config)
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
    """The CLI failed with exactly one ``eva: error:`` line (no traceback) containing every needle."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("eva: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
