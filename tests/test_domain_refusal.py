"""A domain's ``init`` refuses, up front, a model another domain (or none) serves; and the domains honour
``use_label_mask`` (peft's EVA option) where their batches carry token labels."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import transformers
from tiny_models import DOMAINS, build, token_batches

import eva_core
from eva_core.errors import DomainMismatchError, EvaError

PACKAGES = {"nlu": "eva-nlu", "llm": "eva-llm", "vision": "eva-vision", "rl": "eva-rl"}


class Untouchable:
    """Batches that must not be read: iterating them fails the test."""

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("the domain read a batch before refusing the model")

    def __len__(self) -> int:
        return 1


def _snapshot(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str], set[str], bool]:
    state = {key: value.clone() for key, value in model.state_dict().items()}
    return state, [name for name, _ in model.named_modules()], set(vars(model)), model.training


@pytest.mark.parametrize(
    ("domain", "other"), [(d, o) for d in DOMAINS for o in DOMAINS if d != o], ids=lambda value: str(value)
)
def test_a_domain_init_refuses_another_domains_model_up_front(domain: str, other: str) -> None:
    model = build(other)
    before = _snapshot(model)
    init = importlib.import_module(f"eva_{domain}").init
    with pytest.raises(DomainMismatchError) as info:
        init(model, Untouchable())
    message = str(info.value)
    assert f"eva_{domain}.init(model=...) got a {type(model).__name__}" in message
    assert f"the {domain!r} eva domain does not serve" in message
    assert f"eva_{other}.init (package {PACKAGES[other]})" in message  # where the model belongs
    assert isinstance(info.value, EvaError)
    after = _snapshot(model)
    assert after[1:] == before[1:]  # no module injected, no attribute added, same train/eval flag
    assert all(torch.equal(after[0][key], value) for key, value in before[0].items())


def test_a_model_no_domain_claims_is_sent_to_the_generic_path() -> None:
    config = transformers.DeiTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    deit = transformers.DeiTForImageClassification(config)
    with pytest.raises(DomainMismatchError, match=r"no installed eva domain claims it: use eva_core\.init"):
        importlib.import_module("eva_vision").init(deit, Untouchable())


def test_the_llm_domain_honours_use_label_mask() -> None:
    batches = token_batches(labels=True)  # labels -100 on the prompt and the padding
    quick = {"rank": 2, "tau": 0.0, "max_steps": 2, "progress": False, "target_modules": ["q_proj"]}
    masked = eva_core.fit(build("llm"), batches, **quick).layers
    unmasked = eva_core.fit(build("llm"), batches, use_label_mask=False, **quick).layers
    name = next(iter(masked))
    answers = sum(int(((b["labels"] != -100) & (b["attention_mask"] != 0)).sum()) for b in batches[:2])
    tokens = sum(int((b["attention_mask"] != 0).sum()) for b in batches[:2])
    assert (masked[name].rows, unmasked[name].rows) == (answers, tokens)
