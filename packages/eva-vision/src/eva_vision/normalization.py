"""Batch normalization of a frozen backbone during adapter training."""

from __future__ import annotations

from torch import nn

__all__ = ["freeze_batch_norm"]


def freeze_batch_norm(model: nn.Module) -> nn.Module:
    """Put every ``BatchNorm`` layer of ``model`` in eval mode (running statistics, no updates); returns it.

    Call it after ``model.train()`` in each step's loss function: a LoRA fine-tune leaves the backbone's
    buffers as pretrained, so the adapter saved by ``save_pretrained`` (which holds no BN statistics)
    reloads onto the original base model with identical outputs, and the step-0 output equals the base's.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model
