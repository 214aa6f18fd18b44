"""Models no domain lists: the generic plugin leaves output heads out (as peft's ``all-linear`` does),
trains task heads in full, and says once that it chose the layers; domain choice and refusal.

Tiny random transformers models (ALBERT, DeiT, ConvNeXt): only the mechanics are under test. eva-core's
conftest disables every installed domain, so these models go through the generic plugin.
"""

from __future__ import annotations

import copy
import sys
import types
from importlib.metadata import EntryPoint

import pytest
import torch
import transformers
from peft import LoraConfig
from peft.tuners.tuners_utils import _maybe_include_all_linear_layers
from torch import nn

from eva_core import EvaConfig, apply, fit, hookimpl, init, plugin_manager
from eva_core.errors import (
    DomainMismatchError,
    EvaError,
    GenericFallbackWarning,
    InvalidConfigError,
    UnknownDomainError,
)
from eva_core.plugins import generic, manager

QUICK = {"rank": 2, "tau": 0.0, "min_steps": 2, "max_steps": 2, "progress": False}
TEXT = {"vocab_size": 64, "embedding_size": 8, "hidden_size": 16, "num_hidden_layers": 1}
TEXT |= {"num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32}
IMAGE = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
IMAGE |= {"image_size": 28, "patch_size": 7, "num_labels": 3}


def albert(head: str = "classification") -> nn.Module:
    config = transformers.AlbertConfig(**TEXT)
    cls = {"classification": transformers.AlbertForSequenceClassification, "mlm": transformers.AlbertForMaskedLM}
    return cls[head](config).eval()


def deit() -> nn.Module:
    return transformers.DeiTForImageClassification(transformers.DeiTConfig(**IMAGE)).eval()


def convnext() -> nn.Module:
    config = transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)
    return transformers.ConvNextForImageClassification(config).eval()


def text_batches(count: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(0, 64, (4, 12), generator=generator)} for _ in range(count)]


def image_batches(count: int = 2) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"pixel_values": torch.randn(4, 3, 28, 28, generator=generator)} for _ in range(count)]


CLASSIFIERS = [(albert, text_batches), (deit, image_batches), (convnext, image_batches)]


@pytest.mark.parametrize(("build", "make_batches"), CLASSIFIERS, ids=["albert", "deit", "convnext"])
def test_a_task_head_is_trained_in_full_not_adapted(build, make_batches) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build()
    with pytest.warns(GenericFallbackWarning) as record:
        peft_model = init(model, make_batches(), **QUICK)
    fallbacks = [w for w in record if issubclass(w.category, GenericFallbackWarning)]
    assert len(fallbacks) == 1  # once per init, not once per layer or per hook
    message = str(fallbacks[0].message)
    assert type(model).__name__ in message and "output heads ['classifier']" in message
    assert "target_modules=" in message  # how to silence it
    assert fallbacks[0].filename == __file__  # points at the caller's line
    ranks = peft_model.eva_state.ranks
    assert ranks and not any(name.startswith("classifier") for name in ranks)  # before: LoRA on the fresh head
    assert list(peft_model.peft_config["default"].modules_to_save) == ["classifier"]
    head = peft_model.base_model.model.classifier
    assert all(p.requires_grad for p in head.modules_to_save["default"].parameters())  # trained in full


def test_an_lm_head_is_left_out_and_not_saved() -> None:
    torch.manual_seed(0)
    with pytest.warns(GenericFallbackWarning, match=r"output heads \['predictions.decoder'\]"):
        peft_model = init(albert("mlm"), text_batches(), **QUICK)
    assert "predictions.decoder" not in peft_model.eva_state.ranks
    assert "predictions.dense" in peft_model.eva_state.ranks  # pretrained, adapted as by peft's all-linear
    assert peft_model.peft_config["default"].modules_to_save is None  # pretrained (tied): neither adapted nor copied


@pytest.mark.parametrize(
    ("build", "task_type"),
    [(lambda: albert("mlm"), None), (albert, "SEQ_CLS"), (deit, "SEQ_CLS"), (convnext, "SEQ_CLS")],
    ids=["albert-mlm", "albert-cls", "deit", "convnext"],
)
def test_the_generic_targets_are_peft_all_linear(build, task_type: str | None) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = build()
    ours = generic.eva_target_modules(model, EvaConfig())
    peft_config = _maybe_include_all_linear_layers(LoraConfig(target_modules="all-linear", task_type=task_type), model)
    assert sorted(ours) == sorted(peft_config.target_modules)


def test_explicit_targets_silence_the_warning_and_may_adapt_the_head() -> None:
    torch.manual_seed(0)
    peft_model = init(deit(), image_batches(), target_modules=r".*(q_proj|classifier)", **QUICK)  # no warning
    assert "classifier" in peft_model.eva_state.ranks
    assert peft_model.peft_config["default"].modules_to_save is None  # adapted, so not also copied


def test_a_plain_module_gets_every_linear_without_a_warning(model, batches) -> None:
    state = fit(model, batches, **QUICK)  # filterwarnings=error: no GenericFallbackWarning for the user's module
    assert len(state.layers) == 13  # peft's all-linear leaves heads out only of library models


@pytest.fixture
def install(monkeypatch):  # type: ignore[no-untyped-def]
    """``install(name, plugin)``: ``plugin`` becomes the ``eva`` entry point ``name`` for this test."""
    module, points = types.ModuleType("eva_core_test_generic_plugins"), []
    sys.modules[module.__name__] = module
    monkeypatch.setattr(manager, "entry_points", lambda group: [p for p in points if p.group == group])
    monkeypatch.delenv(manager.DISABLE_ENV, raising=False)

    def add(name: str, plugin: object) -> None:
        setattr(module, name, plugin)
        points.append(EntryPoint(name=name, value=f"{module.__name__}:{name}", group="eva"))

    try:
        yield add
    finally:
        sys.modules.pop(module.__name__, None)


class Encoders:
    """A domain like eva-nlu faced with an ALBERT: claims ``kinds``, has no targets for it, names its head."""

    def __init__(self, kinds: tuple[type, ...] = (), heads: list[str] | None = None) -> None:
        self.kinds, self.heads = kinds, heads

    @hookimpl
    def eva_claims_model(self, model):  # type: ignore[no-untyped-def]
        return isinstance(model, self.kinds)

    @hookimpl
    def eva_target_modules(self, model, config):  # type: ignore[no-untyped-def]
        return None

    @hookimpl
    def eva_lora_fields(self, model, targets):  # type: ignore[no-untyped-def]
        return {"modules_to_save": self.heads} if self.heads else {}


def test_a_domain_without_targets_falls_back_without_adapting_its_head(install) -> None:
    """Before: the generic fallback targeted the classifier the domain saves, and peft's wrapper made
    ``apply`` fail with a raw AttributeError ('Linear' object has no attribute 'lora_A')."""
    install("encoders", Encoders(heads=["classifier"]))
    torch.manual_seed(0)
    with pytest.warns(
        GenericFallbackWarning, match="AlbertForSequenceClassification: the 'encoders' eva plugin names no layer of it"
    ):
        peft_model = init(albert(), text_batches(), domain="encoders", **QUICK)
    assert "classifier" not in peft_model.eva_state.ranks
    assert list(peft_model.peft_config["default"].modules_to_save) == ["classifier"]


def test_modules_to_save_has_no_repeats(install, model, batches) -> None:
    install("encoders", Encoders(kinds=(nn.Module,), heads=["head", "blocks.0.up", "head"]))
    state = fit(model, batches, target_modules=["q", "k"], **QUICK)
    assert list(apply(copy.deepcopy(model), state).peft_config["default"].modules_to_save) == ["head", "blocks.0.up"]


def test_a_domain_refuses_a_model_another_domain_claims(install) -> None:
    install("words", Encoders(kinds=(transformers.AlbertPreTrainedModel,)))
    install("pictures", Encoders(kinds=(transformers.DeiTPreTrainedModel,)))
    plugins = plugin_manager()
    with pytest.raises(DomainMismatchError) as info:
        plugins.require_claim(albert(), "pictures")
    message = str(info.value)
    assert "eva_pictures.init(model=...) got a AlbertForSequenceClassification" in message
    assert "model of the 'words' domain: use eva_words.init" in message
    assert isinstance(info.value, EvaError) and isinstance(info.value, TypeError)
    with pytest.raises(DomainMismatchError, match=r"no installed eva domain claims it: use eva_core\.init"):
        plugins.require_claim(convnext(), "pictures")
    plugins.require_claim(deit(), "pictures")  # its own model passes
    plugins.require_claim(deit(), "generic")
    adapted = albert()
    adapted.peft_config = {}  # carries adapters: fit and apply judge it (and say to pass the base model)
    plugins.require_claim(adapted, "pictures")


def test_an_unknown_domain_is_an_unknown_domain_error(model, batches) -> None:
    with pytest.raises(UnknownDomainError, match=r"EvaConfig.domain='vison' is not an installed eva plugin; installed"):
        fit(model, batches, domain="vison", **QUICK)  # before: an InvalidConfigError, the class for bad values


@pytest.mark.parametrize("domain", ["", 3, ["llm"]])
def test_the_domain_field_is_validated(domain: object) -> None:
    with pytest.raises(InvalidConfigError, match=r"EvaConfig.domain="):
        EvaConfig(domain=domain)  # type: ignore[arg-type]
