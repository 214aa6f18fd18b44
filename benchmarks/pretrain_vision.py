"""Pretrain the "DINOv2 architecture, pretrained locally" model (supervised, Fashion-MNIST classes 0-4).

Builds a small transformers ``Dinov2ForImageClassification`` and trains it on one CPU thread (a few
minutes), then saves it with its image processor under ``$EVA_CACHE_DIR/dinov2-arch-fmnist04/<settings
hash>/``, where the vision comparison (``model="dinov2-local"``) and ``eva fit dinov2-local`` find it. This
is supervised pretraining of the DINOv2 architecture, not DINO self-supervision and not Meta's DINOv2
weights. The work is :func:`eva_bench.vision.pretraining.main`.

    python benchmarks/pretrain_vision.py [--steps 1000] [--force]
"""

from __future__ import annotations

from eva_bench.vision.pretraining import main

if __name__ == "__main__":
    main()
