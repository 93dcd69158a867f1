"""PyTorch training of reverse-distillation anomaly detectors (needs the ``train`` extra)."""
