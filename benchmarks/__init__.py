"""Benchmarks that print tables, each against a peer measured in the same run: latency against the papers' way
(:mod:`benchmarks.latency`), precisions, INT8 on the CPU, the stream soak, the four methods, the GPU check and the
demo. Results go to ``benchmarks/results/``. Models run through ``sdk.Detector`` (or its backend), never a second
hand-made session."""
