"""init and apply are transactional: checked before the model is touched, rolled back after any failure
(an interrupt included), so the caller's model comes back exactly as it went in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peft
import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora.model import LoraModel
from torch import nn

import eva_core.adapters
from eva_core import EvaConfig, EvaState, LayerSpectrum, apply, fit, init
from eva_core.errors import EvaError, InvalidConfigError, MetaDeviceError


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a caller could notice: each parameter and buffer (the object and its values), each
    module (name, type, object, attribute names, train/eval flag), each parameter's requires_grad."""
    return {
        "tensors": {name: (t, t.detach().clone()) for name, t in model.state_dict(keep_vars=True).items()},
        "modules": [(n, type(m), m, sorted(m.__dict__), m.training) for n, m in model.named_modules()],
        "grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    tensors = model.state_dict(keep_vars=True)
    assert list(tensors) == list(before["tensors"])
    for name, (tensor, values) in before["tensors"].items():
        assert tensors[name] is tensor, f"{name} was replaced"
        assert torch.equal(tensor, values), f"{name} changed"
    assert [(n, type(m), m, sorted(m.__dict__), m.training) for n, m in model.named_modules()] == before["modules"]
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == before["grad"]


def user_model(make_model: Callable[..., nn.Module]) -> nn.Module:
    """A tiny model as a user may hold it: partly in train mode, the embedding frozen."""
    model = make_model(0).train()
    model.blocks[1].eval()
    model.embed.weight.requires_grad_(False)
    return model


@pytest.fixture
def state(make_model, batches, exact_fit_settings) -> EvaState:
    return fit(make_model(0), batches, **exact_fit_settings)


class InjectedError(RuntimeError):
    pass


def failing_on_call(original: Callable[..., Any], call: int, error: type[BaseException]) -> Callable[..., Any]:
    """``original`` that raises ``error`` on its ``call``-th call (1-based)."""
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise error("injected fault")
        return original(*args, **kwargs)

    return wrapper


def partial_copy(error: type[BaseException]) -> Callable[..., None]:
    """``_copy_components`` that writes three layers, then fails."""
    original = eva_core.adapters._copy_components

    def wrapper(peft_model: Any, rows: dict[str, torch.Tensor], adapter_name: str) -> None:
        original(peft_model, dict(list(rows.items())[:3]), adapter_name)
        raise error("injected fault")

    return wrapper


def _defining(cls: type, attribute: str) -> type:
    """The class in ``cls``'s MRO whose own ``attribute`` a call on ``cls`` runs: the one to patch."""
    return next(base for base in cls.__mro__ if attribute in vars(base))


# (where, attribute, the fault): every step of apply, before and inside peft's injection and after it
STAGES: list[tuple[str, object, str, Callable[[Any, type[BaseException]], Any]]] = [
    ("checks", eva_core.adapters, "state_rows", lambda original, error: failing_on_call(original, 1, error)),
    ("domain", eva_core.adapters, "_domain", lambda original, error: failing_on_call(original, 1, error)),
    ("config", eva_core.adapters, "lora_config_for", lambda original, error: failing_on_call(original, 1, error)),
    ("first layer", LoraModel, "_create_and_replace", lambda original, error: failing_on_call(original, 1, error)),
    ("third layer", LoraModel, "_create_and_replace", lambda original, error: failing_on_call(original, 3, error)),
    ("last layer", LoraModel, "_create_and_replace", lambda original, error: failing_on_call(original, 13, error)),
    (
        "freezing",
        _defining(LoraModel, "_mark_only_adapters_as_trainable"),  # BaseTuner's, or LoraModel's own (peft 0.15)
        "_mark_only_adapters_as_trainable",
        lambda original, error: failing_on_call(original, 1, error),
    ),
    (
        "dtype cast",
        _defining(LoraModel, "_cast_adapter_dtype"),
        "_cast_adapter_dtype",
        lambda original, error: failing_on_call(original, 1, error),
    ),
    ("copy", eva_core.adapters, "_copy_components", lambda original, error: partial_copy(error)),
]


@pytest.mark.parametrize("error", [InjectedError, KeyboardInterrupt])
@pytest.mark.parametrize(("where", "owner", "attribute", "fault"), STAGES, ids=[stage[0] for stage in STAGES])
def test_apply_failing_at_any_step_leaves_the_model_as_it_was(
    make_model, state, monkeypatch, where, owner, attribute, fault, error
) -> None:
    model = user_model(make_model)
    before = snapshot(model)
    monkeypatch.setattr(owner, attribute, fault(getattr(owner, attribute), error))
    lora_config = LoraConfig(r=4, lora_alpha=8, modules_to_save=["embed"])  # a saved module is wrapped too
    with pytest.raises(error, match="injected fault"):
        apply(model, state, lora_config)
    assert_unchanged(model, before)
    monkeypatch.undo()
    peft_model = apply(model, state, lora_config)  # and the model still takes the adapters afterwards
    assert torch.equal(peft_model.get_base_model().blocks[0].q.lora_A["default"].weight, state.components("blocks.0.q"))


@pytest.mark.parametrize("error", [InjectedError, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["fit", "apply", "copy"])
def test_init_failing_at_any_step_leaves_the_model_as_it_was(
    make_model, batches, exact_fit_settings, monkeypatch, where, error
) -> None:
    model = user_model(make_model)
    before = snapshot(model)
    if where == "fit":
        from eva_core.fitting import loop

        monkeypatch.setattr(loop._Fit, "run", failing_on_call(loop._Fit.run, 1, error))
    elif where == "apply":
        monkeypatch.setattr(LoraModel, "_create_and_replace", failing_on_call(LoraModel._create_and_replace, 5, error))
    else:  # after peft injected the adapters, while the components are copied in
        monkeypatch.setattr(eva_core.adapters, "_copy_components", partial_copy(error))
    with pytest.raises(error, match="injected fault"):
        init(model, batches, **exact_fit_settings)
    assert_unchanged(model, before)


def test_init_checks_the_adapter_config_before_the_fit(make_model, batches, exact_fit_settings, monkeypatch) -> None:
    from eva_core.fitting import loop

    monkeypatch.setattr(loop._Fit, "run", failing_on_call(loop._Fit.run, 1, InjectedError))  # the fit must not start
    with pytest.raises(InvalidConfigError, match=r"lora_config\.r=0"):
        init(make_model(0), batches, lora_config=LoraConfig(r=0), **exact_fit_settings)
    with pytest.raises(InvalidConfigError, match=r"adapter_name='a\.b'"):
        init(make_model(0), batches, adapter_name="a.b", **exact_fit_settings)


# ----------------------------------------------------------------------------------------- invalid input


def mlp(width: int = 8, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 6))


def handmade_state(ranks: dict[str, int], width: int = 8, config: EvaConfig | None = None) -> EvaState:
    """A state over layers "0" and "2" of :func:`mlp`, with orthonormal components of ``width``."""
    values = torch.linspace(1.0, 0.1, 6)

    def spectrum(name: str) -> LayerSpectrum:
        return LayerSpectrum(torch.eye(6, width), values.sqrt(), values, values / 10, 100, True, 2, name)

    layers = {name: spectrum(name) for name in ranks if name != "9"}
    return EvaState(layers=layers, ranks=ranks, steps=2, config=config or EvaConfig(rank=2, rho=3))


INVALID = {
    "other widths": (dict(ranks={"0": 2, "2": 2}, width=5), None, r"layer '0'.*width 5.*width 8"),
    "negative rank": (dict(ranks={"0": -1, "2": 2}), None, r"EvaState.ranks\['0'\]=-1"),
    "rank over the components": (dict(ranks={"0": 2, "2": 7}), None, r"EvaState.ranks\['2'\]=7"),
    "unknown layer": (dict(ranks={"0": 2, "5": 2}), None, r"layer '5'"),
    "layer without spectrum": (dict(ranks={"0": 2, "9": 2}), None, r"EvaState.ranks\['9'\]"),
    "r=0": (dict(ranks={"0": 2, "2": 2}), LoraConfig(r=0), r"lora_config.r=0"),
    "negative alpha": (dict(ranks={"0": 2, "2": 2}), LoraConfig(r=2, lora_alpha=-4), r"lora_config.lora_alpha=-4"),
    "dropout 1.5": (dict(ranks={"0": 2, "2": 2}), LoraConfig(r=2, lora_dropout=1.5), r"lora_config.lora_dropout"),
    "excluded layer": (dict(ranks={"0": 2, "2": 2}), LoraConfig(r=2, exclude_modules=["2"]), r"layer '2'"),
    "layer saved whole": (dict(ranks={"0": 2, "2": 2}), LoraConfig(r=2, modules_to_save=["0"]), r"layer '0'"),
}


@pytest.mark.parametrize(("state_args", "lora_config", "message"), INVALID.values(), ids=list(INVALID))
def test_invalid_apply_is_refused_before_any_change(state_args, lora_config, message) -> None:
    model = mlp()
    before = snapshot(model)
    with pytest.raises(InvalidConfigError, match=message):
        apply(model, handmade_state(**state_args), lora_config)
    assert_unchanged(model, before)
    assert not hasattr(model, "peft_config")


# ------------------------------------------------------------------------------------------ meta device


def test_a_meta_model_is_refused_by_name(batches, exact_fit_settings, state) -> None:
    from conftest import tiny_model

    model = tiny_model(0).to("meta")  # every parameter and buffer without data
    for call in (
        lambda: fit(model, batches, **exact_fit_settings),
        lambda: init(model, batches, **exact_fit_settings),
        lambda: apply(model, state),
    ):
        with pytest.raises(MetaDeviceError, match=r"buffer 'position' is on the meta device.*to_empty"):
            call()
    assert isinstance(MetaDeviceError("x"), EvaError)


def test_a_buffer_on_meta_is_named(state) -> None:
    from conftest import tiny_model

    model = tiny_model(0)
    model.position = torch.empty(16, device="meta")
    with pytest.raises(MetaDeviceError, match="buffer 'position'"):
        apply(model, state)


def test_peft_is_not_asked_about_a_meta_model(monkeypatch, state) -> None:
    with torch.device("meta"):
        model = mlp()
    monkeypatch.setattr(peft, "get_peft_model", failing_on_call(peft.get_peft_model, 1, InjectedError))
    with pytest.raises(MetaDeviceError, match=r"parameter '0\.weight'"):
        apply(model, handmade_state({"0": 2, "2": 2}))


# ------------------------------------------------------------------------------- a transformers model


@pytest.mark.parametrize("where", ["third layer", "freezing", "copy"])
def test_a_task_model_is_rolled_back_with_its_config(monkeypatch, where) -> None:
    """peft's task wrappers (here SEQ_CLS: a saved classifier, the model's config consulted) leave nothing
    behind either: not in the modules, not in ``model.config``."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, num_labels=3
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    ids = torch.randint(0, 50, (4, 7), generator=torch.Generator().manual_seed(0))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}] * 2
    quick = {"tau": 0.0, "min_steps": 2, "max_steps": 2, "progress": False}
    state = fit(model, batches, rank=2, target_modules=["query", "value"], **quick)
    before, settings = snapshot(model), model.config.to_dict()
    _, owner, attribute, fault = next(stage for stage in STAGES if stage[0] == where)
    monkeypatch.setattr(owner, attribute, fault(getattr(owner, attribute), InjectedError))
    lora_config = LoraConfig(r=2, lora_alpha=2, task_type="SEQ_CLS", modules_to_save=["classifier"])
    with pytest.raises(InjectedError):
        apply(model, state, lora_config)
    assert_unchanged(model, before)
    assert model.config.to_dict() == settings
