"""PyTorch training of reverse-distillation anomaly detectors (needs the ``train`` extra).

Teachers (:mod:`train.backbones`), components (:mod:`train.components`), one model assembly (:mod:`train.model`),
the deployable graph (:mod:`train.graph`), one package per method (:mod:`train.methods`), the run settings
(:mod:`train.config`, no PyTorch), the loop (:mod:`train.trainer`) and checkpoints (:mod:`train.checkpoint`).
Builds on ``sdk`` (datasets, metadata); never on ``export``, ``benchmarks`` or the command.

For scripts: ``from train import TrainConfig, train`` (imported on first use, so ``import train`` alone needs no
PyTorch)::

    from train import TrainConfig, train
    checkpoint = train(TrainConfig(data="parts/good", out="runs/line3", epochs=30, device="auto"))
"""

from typing import Any

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str) -> Any:
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    if name == "train":
        from .trainer import train

        return train
    raise AttributeError(f"module 'train' has no attribute {name!r}")
