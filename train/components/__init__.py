"""Building blocks shared by every reverse-distillation method: bottleneck, decoder and anomaly-map head."""
