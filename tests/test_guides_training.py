"""The code of the training guides (docs/guides/own-model.md, causal-lm.md, multi-process.md) runs and does
what the pages say: on the real offline models, with tiny step counts.

Each guide's script (``docs/guides/code/*.py``) runs as a reader runs it: guides 1 and 2 through ``main`` in
this process, with its functions wrapped to record what the pages promise (the output is unchanged at
step 0, the adapter's ``A`` rows are the state's components, EVA measured the tokens the page says,
training moves ``B``, the saved adapter loads with plain peft); guide 3 under ``torchrun`` and
``accelerate launch`` on 2 CPU processes. About 3 minutes in all on 2 shared cores (``--durations``).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

import eva_core
from eva_core import EvaState
from eva_core.errors import NotConvergedWarning

GUIDES = Path(__file__).resolve().parents[1] / "docs" / "guides"


def guide_script(name: str) -> ModuleType:
    """The module of ``docs/guides/code/<name>.py``, imported from its file."""
    path = GUIDES / "code" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"guide_{name}", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def lora_weights(model: PeftModel, which: str) -> dict[str, torch.Tensor]:
    """``{layer name: lora_A or lora_B weight of the default adapter}``, copied."""
    found = {}
    for name, module in model.get_base_model().named_modules():
        parts = getattr(module, which, None)
        if isinstance(parts, torch.nn.ModuleDict) and "default" in parts:
            found[name] = parts["default"].weight.detach().clone()
    return found


def assert_adapter_is_the_state(peft_model: PeftModel) -> None:
    """Every adapted layer's ``lora_A`` rows are the state's components and its ``lora_B`` is zero."""
    state = peft_model.eva_state
    a_rows, b_rows = lora_weights(peft_model, "lora_A"), lora_weights(peft_model, "lora_B")
    adapted = {name for name, rank in state.ranks.items() if rank > 0}
    assert set(a_rows) == adapted
    for name in adapted:
        torch.testing.assert_close(a_rows[name], state.components(name), rtol=0, atol=0)
        assert not b_rows[name].any(), name


# --- guide 1: docs/guides/own-model.md ---------------------------------------------------------------


@pytest.fixture(scope="module")
def own_model() -> ModuleType:
    return guide_script("own_model")


@pytest.fixture(scope="module")
def minilm(own_model: ModuleType) -> tuple[Any, Any]:
    torch.manual_seed(0)
    return own_model.load_model()


def test_own_model_loader_forms_measure_the_same_tokens(
    own_model: ModuleType, minilm: tuple[Any, Any], tmp_path: Path
) -> None:
    """Dicts, ``BatchEncoding``, named tuples and a stream of the same rows give the same state; raw tuples
    carry no mask, so their padding is measured too (what the page warns about)."""
    model, tokenizer = minilm
    rows = own_model.labelled_rows()
    states = {}
    for form in own_model.LOADERS:
        batches = own_model.make_batches(form, rows, tokenizer, tmp_path)
        with pytest.warns(NotConvergedWarning):
            states[form] = eva_core.fit(model, batches, max_steps=2, progress=False)
    first_two = next(iter(own_model.dict_loader(rows, tokenizer, 16)))  # the 2 batches of 8 each form fed
    tokens = int(first_two["attention_mask"].sum())
    reference = states["dict"]
    for form, state in states.items():
        assert state.steps == 2 and state.ranks == reference.ranks, form
        for name, layer in state.layers.items():
            assert layer.rows == tokens, (form, name)
            rank = state.ranks[name]
            cosines = (layer.components[:rank] * reference.layers[name].components[:rank]).sum(dim=1).abs()
            assert bool((cosines > 1 - 1e-4).all()), (form, name, cosines.min())

    unnamed = ((ids, mask) for ids, mask, _labels in own_model.tuple_loader(rows, tokenizer, 8))
    with pytest.warns(NotConvergedWarning):
        padded = eva_core.fit(model, unnamed, max_steps=2, progress=False)
    assert {layer.rows for layer in padded.layers.values()} == {2 * 8 * 32}  # every padded position


def test_own_model_guide_trains_and_saves_a_plain_peft_adapter(
    own_model: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``main`` as a reader runs it: the output is unchanged at step 0, the ``A`` rows are the components,
    Trainer moves ``B``, and the saved adapter reproduces the trained model with plain peft."""
    seen: dict[str, Any] = {}
    load_model, train = own_model.load_model, own_model.train

    def recording_load() -> tuple[Any, Any]:
        model, tokenizer = load_model()
        seen["probe"] = dict(tokenizer(["The talk was wonderful.", "The phone broke after a day."], padding=True,
                                       return_tensors="pt"))  # fmt: skip
        with torch.no_grad():
            seen["base"] = model(**seen["probe"]).logits
        return model, tokenizer

    def recording_train(peft_model: PeftModel, *args: Any) -> Any:
        with torch.no_grad():
            seen["step0"] = peft_model(**seen["probe"]).logits
        assert_adapter_is_the_state(peft_model)
        seen["a0"] = lora_weights(peft_model, "lora_A")
        return train(peft_model, *args)

    monkeypatch.setattr(own_model, "load_model", recording_load)
    monkeypatch.setattr(own_model, "train", recording_train)
    with pytest.warns(NotConvergedWarning):  # 80 sentences are too few for tau=0.99: the page says so
        peft_model = own_model.main(["--loader", "stream", "--steps", "2", "--out", str(tmp_path)])
    assert peft_model.eva_state.not_converged  # the layers the warning names

    torch.testing.assert_close(seen["step0"], seen["base"], rtol=0, atol=1e-6)
    trained_b = lora_weights(peft_model, "lora_B")
    assert all(b.any() for b in trained_b.values())  # every adapted layer learned
    assert set(trained_b) == set(seen["a0"])
    peft_model.eval()
    with torch.no_grad():
        trained = peft_model(**seen["probe"]).logits
    assert not torch.allclose(trained, seen["base"])

    base, _tokenizer = load_model()  # a fresh base whose head differs: the adapter carries the trained one
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**seen["probe"]).logits, trained, rtol=0, atol=1e-5)
    assert (tmp_path / "reviews.jsonl").read_text().count("\n") == 80


# --- guide 2: docs/guides/causal-lm.md ----------------------------------------------------------------


@pytest.fixture(scope="module")
def causal_lm() -> ModuleType:
    return guide_script("causal_lm")


def answer_tokens(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    """Per example, the token ids a loss (and EVA) counts: ``labels != -100``, padding excluded."""
    keep = batch["labels"] != -100  # (B, T)
    if "attention_mask" in batch:
        keep &= batch["attention_mask"] != 0
    return [tuple(ids[row].tolist()) for ids, row in zip(batch["input_ids"], keep, strict=True)]


@pytest.fixture(scope="module")
def causal_lm_run(causal_lm: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``main`` with ``Trainer``, one EVA batch and one training step, recording what the page promises."""
    seen: dict[str, Any] = {"out": tmp_path_factory.mktemp("causal-lm")}
    load_model, train = causal_lm.load_model, causal_lm.train_with_trainer

    def recording_load() -> tuple[Any, Any]:
        model, tokenizer = load_model()
        seen["tokenizer"] = tokenizer
        seen["batch"] = next(iter(causal_lm.loader(tokenizer, causal_lm.problems())))  # the one batch EVA reads
        with torch.no_grad():
            seen["base"] = model(**seen["batch"]).logits
        return model, tokenizer

    def recording_train(peft_model: PeftModel, *args: Any) -> Any:
        with torch.no_grad():
            seen["step0"] = peft_model(**seen["batch"]).logits
        assert_adapter_is_the_state(peft_model)
        return train(peft_model, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(causal_lm, "load_model", recording_load)
        patch.setitem(causal_lm.TRAINERS, "transformers", recording_train)
        args = ["--trainer", "transformers", "--steps", "1", "--fit-batches", "1", "--out", str(seen["out"])]
        with pytest.warns(NotConvergedWarning):  # one batch: the page says how much real data needs
            seen["peft_model"] = causal_lm.main(args)
    return seen


def assert_trained_adapter(peft_model: PeftModel, batch: dict[str, torch.Tensor], out: Path, load_model: Any) -> None:
    """Every B moved, and plain peft reloads the trained adapter exactly."""
    assert all(b.any() for b in lora_weights(peft_model, "lora_B").values())
    peft_model.eval()
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        trained = peft_model(**inputs).logits
        base, _tokenizer = load_model()
        reloaded = PeftModel.from_pretrained(base, out / "adapter").eval()
        torch.testing.assert_close(reloaded(**inputs).logits, trained, rtol=0, atol=1e-4)


def test_causal_lm_guide_with_trainer(causal_lm: ModuleType, causal_lm_run: dict[str, Any]) -> None:
    """The output is unchanged at step 0; EVA measured exactly the answer tokens (the chat prompt and the
    padding gave no rows); Trainer trained every adapter; the saved adapter reloads with plain peft."""
    batch, tokenizer = causal_lm_run["batch"], causal_lm_run["tokenizer"]
    peft_model = causal_lm_run["peft_model"]
    torch.testing.assert_close(causal_lm_run["step0"], causal_lm_run["base"], rtol=0, atol=1e-5)
    state, answers = peft_model.eva_state, answer_tokens(batch)
    assert state.steps == 1
    assert {layer.rows for layer in state.layers.values()} == {sum(map(len, answers))}
    assert 2 * sum(map(len, answers)) < int(batch["attention_mask"].sum())  # the prompts are most tokens
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for ids, answer in zip(batch["input_ids"], answers, strict=True):  # the prompt, then the answer
        assert tokenizer.decode(ids).count("<|im_start|>assistant") == 1
        assert "<|im_start|>" not in tokenizer.decode(list(answer)) and im_end in answer
    assert_trained_adapter(peft_model, batch, causal_lm_run["out"], causal_lm.load_model)


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # trl's default, not ours
def test_causal_lm_guide_with_sft_trainer(causal_lm: ModuleType, causal_lm_run: dict[str, Any], tmp_path: Path) -> None:
    """trl's SFTTrainer, given the prompt-completion messages, trains on the very answer tokens EVA measured.

    The guide's ``train_with_sft`` runs on the same EVA state applied to a fresh model (``main`` differs only
    in which training function it calls; a second fit would double the test's time)."""
    model, tokenizer = causal_lm.load_model()
    peft_model = eva_core.apply(model, causal_lm_run["peft_model"].eva_state)
    problems = causal_lm.problems()
    trainer = causal_lm.train_with_sft(peft_model, tokenizer, problems, 1, tmp_path)
    peft_model.save_pretrained(tmp_path / "adapter")
    sft_batch = next(iter(trainer.get_train_dataloader()))  # shuffled: compare example by example, as sets
    eva_batch = next(iter(causal_lm.loader(tokenizer, problems, batch_size=len(problems))))
    assert len(sft_batch["input_ids"]) == 4
    assert set(answer_tokens(sft_batch)) < set(answer_tokens(eva_batch))
    assert_trained_adapter(peft_model, causal_lm_run["batch"], tmp_path, causal_lm.load_model)


# --- guide 3: docs/guides/multi-process.md ------------------------------------------------------------

LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"],
}  # fmt: skip


def launch(launcher: str, out: Path) -> None:
    """The guide's script on 2 CPU processes (gloo), 1 training step, each rank saving its weights."""
    script = GUIDES / "code" / "multi_process.py"
    command = [sys.executable, *LAUNCHERS[launcher], str(script), "--steps", "1", "--out", str(out), "--every-rank"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_multi_process_guide(launcher: str, minilm: tuple[Any, Any], tmp_path: Path) -> None:
    """Both ranks end with the same trained adapter, whose LoRA B moved; the saved adapter loads with plain
    peft and holds those weights; the EVA state is the single-process fit of the union of the shards.

    ``accelerate launch --multi_gpu`` on a machine without GPUs starts the processes through torchrun all
    the same (the script then joins a gloo group); accelerate's own multi-CPU mode needs mpirun."""
    launch(launcher, tmp_path)
    ranks = [load_file(tmp_path / f"rank{rank}-of2.safetensors") for rank in range(2)]
    assert set(ranks[0]) == set(ranks[1]) and any(".lora_B." in name for name in ranks[0])
    for name, weight in ranks[0].items():
        torch.testing.assert_close(ranks[1][name], weight, rtol=0, atol=0)
        assert weight.any() or ".lora_B." not in name, name

    model, tokenizer = minilm
    reloaded = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "adapter")
    saved = {
        name: p.detach() for name, p in reloaded.named_parameters() if ".lora_" in name or "modules_to_save" in name
    }
    assert set(saved) == set(ranks[0])
    for name, weight in saved.items():
        torch.testing.assert_close(weight, ranks[0][name], rtol=0, atol=0)

    state = EvaState.load(tmp_path / "eva-state")
    assert state.extra["world_size"] == 2 and state.extra["batches"] == 8  # 64 rows: 4 batches of 8 per rank
    if launcher == "torchrun":  # the fit does not depend on the launcher: compared once, to save CI time
        assert_single_process_fit_equals(state, model, tokenizer, guide_script("multi_process").labelled_rows())


def assert_single_process_fit_equals(state: EvaState, model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> None:
    """One process fitting the batches of both ranks in turn (a distributed step is one batch per rank: hence
    ``check_every=2`` and ``min_steps=4``) gets the same ranks and components."""
    from transformers import DataCollatorWithPadding

    collator = DataCollatorWithPadding(tokenizer)
    texts = [tokenizer(row["sentence"]) for row in rows]
    shards = [[collator(texts[start : start + 16 : 2]) for start in range(rank, len(texts), 16)] for rank in range(2)]
    batches = [batch for pair in zip(*shards, strict=True) for batch in pair]  # rank 0's, rank 1's, rank 0's...
    with pytest.warns(NotConvergedWarning):
        single = eva_core.fit(model, batches, check_every=2, min_steps=4, progress=False)
    assert single.ranks == state.ranks and single.steps == state.extra["batches"]
    for name, layer in single.layers.items():
        rank = state.ranks[name]
        cosines = (layer.components[:rank] * state.layers[name].components[:rank]).sum(dim=1).abs()
        assert bool((cosines > 1 - 1e-4).all()), (name, cosines.min())
