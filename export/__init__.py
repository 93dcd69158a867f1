"""Export trained rdedge models: the whole detector graph to ONNX, self-checked and calibrated at its precision
(:mod:`export.onnx`, :mod:`export.precision` for FP16 and INT8 Q/DQ), then to TensorRT engines on the target machine
(:mod:`export.tensorrt`); :mod:`export.reference` is the papers' host-side post-processing the checks compare with.

Builds on ``train`` (the PyTorch graph) and ``sdk`` (the graph contract, metadata and the backend that runs the
checks); needs PyTorch and onnx."""
