"""Training on CUDA (marked ``gpu``; skipped without a CUDA GPU in PyTorch). Written for the first GPU host: not run
in CI, which has no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU in PyTorch")]


def op_types(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("method", ["rd4ad", "rdpp", "drd", "reason"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_each_method_trains_on_cuda_with_amp_and_exports_the_cpu_graph(method, amp, bottle_subset: Path,
                                                                        tmp_path: Path):
    from export.onnx import export_onnx
    from sdk import Detector
    from train.checkpoint import load_checkpoint
    from train.trainer import TrainConfig, train

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    reports = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / device
        train(TrainConfig(data=str(bottle_subset), out=str(out), method=method, epochs=1, image_size=128,
                          batch_size=8, max_train_images=16, device=device, amp=amp), progress=False)
        metadata, _ = load_checkpoint(out)
        assert np.isfinite(metadata.training["loss_history"]).all()
        assert metadata.training["device"].startswith(device)
        reports[device] = export_onnx(out, check_images=2)
    assert reports["cuda"].metadata.training["amp"] == {"bf16": "bfloat16", "fp16": "float16"}[amp]
    assert op_types(reports["cuda"].path) == op_types(reports["cpu"].path)  # the export is the same graph
    result = Detector(reports["cuda"].path)(np.full((128, 128, 3), 90, np.uint8))
    assert np.isfinite(result.score)
