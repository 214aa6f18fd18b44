"""Target selection: peft's matching rule, invalid regexes and list entries that match nothing, checked on
hand-made cases and, with hypothesis, on generated module trees against peft's own matcher."""

from __future__ import annotations

import re
import types

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from eva_core import EvaConfig, EvaError, fit
from eva_core.errors import InvalidConfigError, NoTargetLayersError
from eva_core.targets import select_modules

QUICK = {"rank": 2, "tau": 0.0, "min_steps": 2, "max_steps": 2, "progress": False}


@pytest.mark.parametrize("pattern", ["(", "blocks.[0", "*q", "a{2,1}"])
def test_an_invalid_regex_is_an_invalid_config_naming_it(model, batches, pattern: str) -> None:
    with pytest.raises(InvalidConfigError, match=re.escape(f"target_modules={pattern!r}")) as info:
        EvaConfig(target_modules=pattern)
    assert "regular expression" in str(info.value)
    with pytest.raises(InvalidConfigError, match=re.escape(f"target_modules={pattern!r}")):
        fit(model, batches, target_modules=pattern, **QUICK)  # before: a raw re.error from deep in the fit
    with pytest.raises(InvalidConfigError, match=re.escape(repr(pattern))):
        select_modules(model, pattern)  # a domain plugin's regex goes through the same check


def test_a_list_entry_that_matches_nothing_is_named(model, batches) -> None:
    with pytest.raises(NoTargetLayersError) as info:
        fit(model, batches, target_modules=["q", "qkv_proj", "up"], **QUICK)  # before: 'qkv_proj' silently ignored
    message = str(info.value)
    assert "target_modules entry 'qkv_proj' matches no module of TinyModel" in message
    assert "'blocks.0.q'" in message  # a few modules that exist
    assert isinstance(info.value, EvaError) and isinstance(info.value, ValueError)


def test_every_unmatched_entry_is_listed(model) -> None:
    with pytest.raises(NoTargetLayersError, match=r"entry 'nope' matches no module .* \(nor do \['zilch'\]\)"):
        select_modules(model, ["q", "nope", "zilch"])


def test_matching_follows_peft(model) -> None:
    assert list(select_modules(model, ["blocks.1.q", "head"])) == ["blocks.1.q", "head"]
    assert list(select_modules(model, ("0.up",))) == ["blocks.0.up"]  # a dotted suffix
    assert list(select_modules(model, r"blocks\.\d\.(q|v)")) == ["blocks.0.q", "blocks.0.v", "blocks.1.q", "blocks.1.v"]
    with pytest.raises(NoTargetLayersError):
        select_modules(model, r"q")  # a regex must match the whole name
    with pytest.raises(NoTargetLayersError, match=r"entry 'locks\.0\.q'"):
        select_modules(model, ["q", "locks.0.q"])  # a list entry is whole dotted parts, not a substring


# --- property: generated module trees and target selections against peft's matcher -------------------

WORDS = ("q", "k", "up", "head", "0", "1", "proj", "q_proj")
INVALID = ("(", "[q", "*", "q{2,1}", "(?P<x>q", "\\")


def _tree(depth: int) -> st.SearchStrategy[nn.Module]:
    leaf = st.builds(lambda: nn.Linear(2, 2)) | st.builds(nn.ReLU)
    if depth == 0:
        return leaf
    children = st.dictionaries(st.sampled_from(WORDS), _tree(depth - 1), min_size=1, max_size=3)
    return leaf | children.map(nn.ModuleDict)


@st.composite
def model_and_targets(draw: st.DrawFn) -> tuple[nn.Module, list[str] | str]:
    model = nn.ModuleDict(draw(st.dictionaries(st.sampled_from(WORDS), _tree(2), min_size=1, max_size=3)))
    names = [name for name, _ in model.named_modules() if name]
    suffixes = sorted({".".join(name.split(".")[i:]) for name in names for i in range(len(name.split(".")))})
    entry = st.sampled_from(suffixes) | st.sampled_from(WORDS) | st.sampled_from(("nope", "q.k", "", "0.q"))
    as_list = st.lists(entry, min_size=1, max_size=4)
    piece = st.sampled_from([re.escape(s) for s in suffixes] + [".*", r"\d", "(q|k)", "up|head"])
    regex = st.lists(piece, min_size=1, max_size=3).map(lambda parts: r"\.".join(parts)) | st.sampled_from(INVALID)
    return model, draw(as_list | regex)


def _peft_rule(targets: list[str] | str) -> types.SimpleNamespace:
    """What peft's ``check_target_module_exists`` reads of a ``LoraConfig``."""
    modules = targets if isinstance(targets, str) else set(targets)
    return types.SimpleNamespace(
        target_modules=modules, exclude_modules=None, modules_to_save=None, target_parameters=None,
        layers_to_transform=None, layers_pattern=None,
    )  # fmt: skip


def _peft_selects(model: nn.Module, targets: list[str] | str) -> list[str]:
    rule = _peft_rule(targets)
    return [name for name, _ in model.named_modules() if name and check_target_module_exists(rule, name)]


@settings(max_examples=250)
@given(model_and_targets())
def test_selection_is_peft_rule_or_an_error_naming_the_entry(case: tuple[nn.Module, list[str] | str]) -> None:
    """Either the selected modules are exactly peft's, in model order, and every list entry selects one;
    or an EvaError names the offending regex or entry."""
    model, targets = case
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error:
            event("invalid regex")
            with pytest.raises(InvalidConfigError, match=re.escape(repr(targets))):
                select_modules(model, targets)
            return
    expected = _peft_selects(model, targets)
    unmatched = [] if isinstance(targets, str) else [t for t in targets if not _peft_selects(model, [t])]
    outcome = "no match" if not expected else "unmatched entry" if unmatched else "selected"
    event(f"{'regex' if isinstance(targets, str) else 'list'}: {outcome}")
    if not expected or unmatched:
        with pytest.raises(NoTargetLayersError) as info:
            select_modules(model, targets)
        named = repr(targets) if not expected else repr(unmatched[0])
        assert named in str(info.value)
        return
    assert list(select_modules(model, targets)) == expected
