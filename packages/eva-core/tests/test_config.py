"""EvaConfig: defaults, validation messages, replace()."""

from __future__ import annotations

import dataclasses

import pytest

from eva_core import EvaConfig, EvaError
from eva_core.errors import InvalidConfigError


def test_defaults() -> None:
    config = EvaConfig()
    assert config.rank == 16
    assert config.rho == 2.0
    assert config.tau == 0.99  # the paper's rule; tau=None selects the subspace-error rule
    assert config.target_error == 0.3
    assert config.stopping == "|cos| >= 0.99"
    assert EvaConfig(tau=None, target_error=0.1).stopping == "subspace error <= 0.1"
    assert config.centered is True
    assert config.whiten is False
    assert config.target_modules is None
    assert config.redistribution == "explained_variance_ratio"
    assert config.min_steps <= config.max_steps
    assert config.check_every == 1
    assert config.max_components == 32


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({"rank": 0}, "rank=0"),
        ({"rank": -3}, "rank=-3"),
        ({"rank": 1.5}, "rank=1.5"),
        ({"rank": True}, "rank=True"),
        ({"rho": 0.5}, "rho=0.5"),
        ({"rho": float("inf")}, "rho=inf"),
        ({"tau": 1.2}, "tau=1.2"),
        ({"tau": -0.1}, "tau=-0.1"),
        ({"tau": float("nan")}, "tau=nan"),
        ({"tau": "0.99"}, "tau='0.99'"),
        ({"target_error": 0.0}, "target_error=0.0"),
        ({"target_error": 1.0}, "target_error=1.0"),
        ({"target_error": None}, "target_error=None"),
        ({"target_error": float("nan")}, "target_error=nan"),
        ({"target_error": 0.1}, "target_error=0.1"),  # the cosine rule (tau=0.99) does not read it
        ({"max_steps": 0}, "max_steps=0"),
        ({"min_steps": 0}, "min_steps=0"),
        ({"min_steps": 5, "max_steps": 3}, "min_steps=5"),
        ({"check_every": 0}, "check_every=0"),
        ({"check_every": 2.0}, "check_every=2.0"),
        ({"redistribution": "foo"}, "redistribution='foo'"),
        ({"target_modules": []}, "target_modules=[]"),
        ({"target_modules": [1]}, "target_modules=[1]"),
        ({"target_modules": 3}, "target_modules=3"),
        ({"gram_memory_bytes": -1}, "gram_memory_bytes=-1"),
        ({"seed": 0.5}, "seed=0.5"),
        ({"seed": 2**64}, "seed=18446744073709551616"),  # torch.Generator.manual_seed refused it raw, mid-fit
        ({"centered": "yes"}, "centered='yes'"),
        ({"whiten": 1}, "whiten=1"),
    ],
)
def test_invalid_value_names_field_and_value(changes: dict, shown: str) -> None:
    with pytest.raises(InvalidConfigError) as info:
        EvaConfig(**changes)
    message = str(info.value)
    assert f"EvaConfig.{shown} is invalid" in message
    assert "expected" in message  # the fix: what a valid value looks like
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, EvaError)


def test_messages_say_what_is_expected() -> None:
    with pytest.raises(InvalidConfigError, match=r"no target with tau=0.99: .* pass tau=None as well"):
        EvaConfig(target_error=0.1)
    with pytest.raises(InvalidConfigError, match=r"an integer in \[1, max_steps=3\]"):
        EvaConfig(min_steps=5, max_steps=3)
    with pytest.raises(InvalidConfigError, match="'explained_variance_ratio', 'explained_variance', 'uniform'"):
        EvaConfig(redistribution="foo")
    with pytest.raises(InvalidConfigError, match=r"a number in \[0, 1\]"):
        EvaConfig(tau=float("nan"))


@pytest.mark.parametrize("metric", ["explained_variance_ratio", "explained_variance", "uniform"])
def test_valid_redistributions(metric: str) -> None:
    assert EvaConfig(redistribution=metric).redistribution == metric


def test_boundary_values_are_valid() -> None:
    config = EvaConfig(rank=1, rho=1, tau=1.0, min_steps=1, max_steps=1, gram_memory_bytes=0)
    assert (config.rank, config.rho, config.tau, config.min_steps, config.max_steps) == (1, 1, 1.0, 1, 1)
    assert EvaConfig(tau=0.0).tau == 0.0
    assert EvaConfig(min_steps=7, max_steps=7).min_steps == 7


def test_target_modules_list_becomes_tuple_and_regex_stays() -> None:
    assert EvaConfig(target_modules=["q", "v"]).target_modules == ("q", "v")
    assert EvaConfig(target_modules=r".*\.q").target_modules == r".*\.q"


@pytest.mark.parametrize(
    ("rank", "rho", "expected"),
    [(16, 2.0, 32), (4, 1.0, 4), (4, 1.5, 6), (8, 1.25, 10), (3, 1.0001, 3)],
)
def test_max_components(rank: int, rho: float, expected: int) -> None:
    assert EvaConfig(rank=rank, rho=rho).max_components == expected


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EvaConfig().rank = 4  # type: ignore[misc]


def test_replace_applies_and_validates() -> None:
    base = EvaConfig(rank=4)
    changed = base.replace(rho=1.0, tau=0.9)
    assert (changed.rank, changed.rho, changed.tau) == (4, 1.0, 0.9)
    assert base.rho == 2.0  # the original is untouched
    with pytest.raises(InvalidConfigError, match=r"EvaConfig\.rank=0"):
        base.replace(rank=0)


def test_replace_unknown_field_raises() -> None:
    with pytest.raises(InvalidConfigError) as info:
        EvaConfig().replace(rnak=4, alpha=2)
    message = str(info.value)
    assert "['alpha', 'rnak']" in message
    assert "'rank'" in message  # lists the valid fields


def test_config_is_hashable_and_comparable() -> None:
    assert EvaConfig(target_modules=["q"]) == EvaConfig(target_modules=("q",))
    assert hash(EvaConfig(target_modules=["q"])) == hash(EvaConfig(target_modules=("q",)))


def test_default_min_steps_follows_a_smaller_max_steps() -> None:
    assert EvaConfig(max_steps=1).min_steps == 1
    assert EvaConfig(max_steps=1).replace(max_steps=5).min_steps == 1
    assert EvaConfig().min_steps == 2
