"""Every domain's defaults come through the plugin contract, so ``eva_core.init``, the domain's own ``init``
and the ``eva-lora fit`` command line give the same EVA settings and the same adapter on that domain's model."""

from __future__ import annotations

import importlib
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from tiny_models import DOMAINS, build

import eva_core
from eva_core.testing import run_cli

QUICK: dict[str, Any] = {"tau": 0.0, "max_steps": 2, "progress": False}
"""What the tests change from the defaults: two batches, converged at once; everything else is the domain's."""
ADAPTER_FIELDS = ("r", "lora_alpha", "modules_to_save", "task_type", "fan_in_fan_out", "rank_pattern")


def _adapter(peft_model: PeftModel) -> dict[str, Any]:
    config = peft_model.peft_config["default"].to_dict()
    return {field: _plain(config[field]) for field in ADAPTER_FIELDS}


def _plain(value: Any) -> Any:
    """Sets and tuples as sorted lists, enums as their value: how adapter_config.json spells them."""
    if isinstance(value, (set, tuple, list)):
        return sorted(value)
    return getattr(value, "value", value)


def _lora_a(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    return {name: value for name, value in peft_model.state_dict().items() if "lora_A" in name}


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_core_init_equals_the_domain_init(domain: str) -> None:
    batches = DOMAINS[domain][1]()
    by_core = eva_core.init(build(domain), batches, **QUICK)
    by_domain = importlib.import_module(f"eva_{domain}").init(build(domain), batches, **QUICK)
    assert by_core.eva_state.extra["domain"] == by_domain.eva_state.extra["domain"] == domain
    assert by_core.eva_state.config == by_domain.eva_state.config.replace(domain=None)
    assert by_core.eva_state.ranks == by_domain.eva_state.ranks
    assert _adapter(by_core) == _adapter(by_domain)
    core_a, domain_a = _lora_a(by_core), _lora_a(by_domain)
    assert core_a.keys() == domain_a.keys() and core_a
    for name, weight in core_a.items():
        torch.testing.assert_close(weight, domain_a[name], rtol=0, atol=0)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_the_command_line_takes_the_python_defaults(domain: str, tmp_path: Path) -> None:
    batches = DOMAINS[domain][1]()
    torch.save(batches, tmp_path / "batches.pt")
    (tmp_path / "tiny_factory.py").write_text(
        textwrap.dedent(
            f"""
            from tiny_models import build

            def model():
                return build({domain!r})
            """
        )
    )
    pythonpath = Path(os.pathsep.join([str(tmp_path), str(Path(__file__).parent)]))
    out = tmp_path / "out"
    args = ("fit", "tiny_factory:model", str(tmp_path / "batches.pt"), "--out", str(out))
    result = run_cli(*args, "--max-batches", "2", "--tau", "0", "--no-progress", domains=True, pythonpath=pythonpath)
    assert result.returncode == 0, result.stderr
    assert f"(domain {domain})" in result.stdout  # the claiming domain, as fit chooses it
    python = eva_core.init(build(domain), batches, **QUICK)
    saved = eva_core.EvaState.load(out / "state")
    assert saved.config == python.eva_state.config.replace(domain=domain)
    assert saved.ranks == python.eva_state.ranks
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert {field: _plain(adapter[field]) for field in ADAPTER_FIELDS} == _adapter(python)
