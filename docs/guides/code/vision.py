"""Guide 4: EVA for a timm ViT and a transformers DINOv2 classifier, then a few training steps.

Both models are small and randomly initialised: no package installable offline ships pretrained ViT or
DINOv2 weights. The images are real (Fashion-MNIST, Debian's ``dataset-fashion-mnist``).

    python docs/guides/code/vision.py --images 256 --steps 20
"""

from __future__ import annotations

import argparse
import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import eva_vision

# --8<-- [start:data]
FASHION_MNIST = Path(os.environ.get("EVA_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz``) as a uint8 array: images (N, 28, 28) or labels (N,)."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]  # the magic number's last byte: how many dimensions
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(count: int) -> TensorDataset:
    """The first ``count`` training images, normalized to about [-1, 1] (N, 1, 28, 28), and labels (N,)."""
    images = torch.from_numpy(read_idx(FASHION_MNIST / "train-images-idx3-ubyte.gz")[:count].copy())
    labels = torch.from_numpy(read_idx(FASHION_MNIST / "train-labels-idx1-ubyte.gz")[:count].astype("int64"))
    pixels = eva_vision.to_model_input(images.unsqueeze(1))  # uint8 -> float, (x - 0.5) / 0.5
    return TensorDataset(pixels, labels)


# --8<-- [end:data]


# --8<-- [start:models]
def timm_vit() -> nn.Module:
    """A small random timm ViT (fused ``qkv``, like DINOv2's): 28 x 28 grey images, 7 x 7 patches."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4)


def dinov2() -> nn.Module:
    """A small random transformers ``Dinov2ForImageClassification`` with the same sizes."""
    from transformers import Dinov2Config, Dinov2ForImageClassification

    config = Dinov2Config(
        image_size=28,
        patch_size=7,
        num_channels=1,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        num_labels=10,
    )
    return Dinov2ForImageClassification(config)


# --8<-- [end:models]


def logits_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, classes): timm models return logits, transformers models an output with ``.logits``."""
    out = model(images)
    return out if isinstance(out, torch.Tensor) else out.logits


# --8<-- [start:train]
def train(peft_model: nn.Module, loader: DataLoader, steps: int, lr: float = 1e-3) -> list[float]:
    """A plain PyTorch loop over the trainable parameters (the LoRA matrices and the head)."""
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    losses: list[float] = []
    while len(losses) < steps:
        for images, labels in loader:
            loss = nn.functional.cross_entropy(logits_of(peft_model, images), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


# --8<-- [end:train]


def run(name: str, model: nn.Module, data: TensorDataset, steps: int, max_steps: int) -> dict[str, object]:
    """Fit EVA on ``model`` with ``data``, check what the guide says, train ``steps`` steps."""
    model.eval()
    probe = data.tensors[0][:16]
    with torch.no_grad():
        before = logits_of(model, probe)
    # --8<-- [start:init]
    loader = DataLoader(data, batch_size=32, shuffle=False)  # yields (images, labels)
    peft_model = eva_vision.init(model, loader, rank=8, max_steps=max_steps, progress=False)
    state = peft_model.eva_state
    # --8<-- [end:init]
    with torch.no_grad():
        after = logits_of(peft_model.eval(), probe)
    train_loader = DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    losses = train(peft_model, train_loader, steps)
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(
        f"{name}: {len(state.ranks)} layers, ranks {min(state.ranks.values())}-{max(state.ranks.values())} "
        f"(sum {sum(state.ranks.values())} = 8 x {len(state.ranks)}), fit on {state.steps} batches; "
        f"max |logit change| at step 0 {float((after - before).abs().max()):.1e}; "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {steps} steps; trainable {trainable:,} of {total:,}"
    )
    return {"model": peft_model, "state": state, "before": before, "after": after, "losses": losses}


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="Fashion-MNIST training images to use")
    parser.add_argument("--steps", type=int, default=100, help="training steps per model")
    parser.add_argument("--max-steps", type=int, default=20, help="most batches EVA may read")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    data = fashion_mnist(args.images)
    return {
        "timm": run("timm ViT", timm_vit(), data, args.steps, args.max_steps),
        "dinov2": run("DINOv2", dinov2(), data, args.steps, args.max_steps),
    }


if __name__ == "__main__":
    main()
