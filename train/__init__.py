"""PyTorch training of reverse-distillation anomaly detectors (needs the ``train`` extra).

Teachers (:mod:`train.backbones`), components (:mod:`train.components`), one model assembly (:mod:`train.model`),
the deployable graph (:mod:`train.graph`), one package per method (:mod:`train.methods`), the run settings
(:mod:`train.config`, no PyTorch), the loop (:mod:`train.trainer`) and checkpoints (:mod:`train.checkpoint`).
Builds on ``sdk`` (datasets, metadata); never on ``export``, ``benchmarks`` or the command."""
