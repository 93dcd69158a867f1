"""Export trained rdedge models: the whole detector graph to ONNX (and, later, TensorRT engines)."""
