"""How an image classifier is scored on held-out batches: accuracy (scikit-learn) and mean cross-entropy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from sklearn.metrics import accuracy_score
from torch import nn

__all__ = ["evaluate", "logits"]


def logits(model: nn.Module, images: torch.Tensor, kind: str | None) -> torch.Tensor:
    """(B, C, H, W) -> (B, num_classes): ``pixel_values=`` for transformers models, positional otherwise."""
    if kind == "transformers":
        return model(pixel_values=images).logits
    out = model(images)
    return out if isinstance(out, torch.Tensor) else out.logits


def evaluate(
    model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], kind: str | None
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``(images, labels)`` batches (called under no_grad);
    the images go to the model's device."""
    device = next(model.parameters()).device
    predicted, expected, loss = [], [], 0.0
    for images, labels in batches:
        out = logits(model, images.to(device), kind)  # (B, num_classes)
        predicted.append(out.argmax(-1).cpu())
        expected.append(labels.cpu())
        loss += float(F.cross_entropy(out, labels.to(out.device), reduction="sum"))
    count = sum(len(labels) for labels in expected)
    if count == 0:
        return {"accuracy": 0.0, "loss": 0.0}
    accuracy = accuracy_score(torch.cat(expected).numpy(), torch.cat(predicted).numpy())
    return {"accuracy": float(accuracy), "loss": loss / count}
