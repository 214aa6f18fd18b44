"""GPT-2's Conv1D layers: the right LoRA config, A of shape (r, d_in), rows from the layer's inputs."""

from __future__ import annotations

import torch
from llm_models import tiny_causal_lm, token_batches

import eva_llm


def test_init_on_conv1d_keeps_the_output_and_shapes() -> None:
    model = tiny_causal_lm("gpt2")
    batches = token_batches(3)
    first = batches[0]
    with torch.no_grad():
        reference = model(input_ids=first["input_ids"], attention_mask=first["attention_mask"]).logits
    peft_model = eva_llm.init(model, batches, rank=2, tau=0.0, max_steps=3, progress=False)
    assert peft_model.peft_config["default"].fan_in_fan_out
    block = peft_model.get_base_model().transformer.h[0]
    for layer, d_in in ((block.attn.c_attn, 32), (block.mlp.c_fc, 32), (block.mlp.c_proj, 128)):
        rank = peft_model.eva_state.ranks[_name(peft_model, layer)]
        assert tuple(layer.lora_A["default"].weight.shape) == (rank, d_in)
        assert torch.count_nonzero(layer.lora_B["default"].weight) == 0
    with torch.no_grad():
        adapted = peft_model(input_ids=first["input_ids"], attention_mask=first["attention_mask"]).logits
    torch.testing.assert_close(adapted, reference, rtol=0, atol=0)


def test_components_are_the_principal_directions_of_the_answer_token_inputs() -> None:
    model = tiny_causal_lm("gpt2")
    batches = token_batches(2)
    layer = model.transformer.h[1].mlp.c_proj  # a Conv1D of d_in = 128
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach().clone()))
    with torch.no_grad():
        for batch in batches:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    rows = torch.cat(
        [x[(b["labels"] != -100) & (b["attention_mask"] == 1)] for x, b in zip(captured, batches, strict=True)]
    )  # (N, d_in)
    centered = rows - rows.mean(dim=0)
    expected = torch.linalg.svd(centered.double(), full_matrices=False).Vh[:2].float()  # (2, d_in)

    state = eva_llm.init(model, batches, rank=2, rho=1.0, tau=0.0, max_steps=2, progress=False).eva_state
    name = "transformer.h.1.mlp.c_proj"
    assert state.layers[name].rows == rows.shape[0]
    cosines = (state.components(name) @ expected.T).diagonal().abs()
    torch.testing.assert_close(cosines, torch.ones(2), atol=1e-4, rtol=0)


def _name(peft_model: torch.nn.Module, layer: torch.nn.Module) -> str:
    return next(name for name, module in peft_model.get_base_model().named_modules() if module is layer)
