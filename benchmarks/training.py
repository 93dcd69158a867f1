"""Training throughput: images per second of each method's training step, CPU against CUDA, AMP on and off.

Every row times :class:`train.trainer.TrainingStep`, the step ``rdedge train`` runs, on the same real batch of good
training images (warm-up steps untimed, CUDA synchronised before the clock stops). The teacher starts from random
weights: throughput does not depend on them, and no weights file is needed. ``benchmarks.gpu_check`` adds these rows
on a GPU host; ``python -m benchmarks.training RUN_DIR`` prints them anywhere (CPU rows only without CUDA).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

METHODS = ("rd4ad", "rdpp", "drd", "reason")


def configurations(cuda: bool) -> list[tuple[str, str]]:
    """(device, amp) pairs to time: the CPU in FP32, and on CUDA FP32 and the default AMP."""
    return [("cpu", "off"), *([("cuda", "off"), ("cuda", "auto")] if cuda else [])]


def images_per_second(method_name: str, backbone: str, images: np.ndarray, device: str, amp: str, *,
                      steps: int = 5, warmup: int = 2) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup``) of one method on one batch of prepared uint8 images."""
    import torch

    from train.backbones import build_teacher, get_teacher_spec
    from train.methods import get_method
    from train.trainer import TrainingStep, build_for_training, resolve_amp, resolve_device

    torch_device = resolve_device(device)
    amp_dtype = resolve_amp(amp, torch_device)
    method = get_method(method_name)
    method.setup(0, torch_device)
    net, graph = build_for_training(method, get_teacher_spec(backbone), build_teacher(backbone, pretrained=False),
                                    images.shape[1], torch_device, method.graph_options())
    step = TrainingStep(method, graph, method.optimizers(net, method.default_lr), amp_dtype)
    batch = torch.from_numpy(images).to(torch_device)
    net.train()
    for i in range(warmup):
        step(batch, i)
    if torch_device.type == "cuda":
        torch.cuda.synchronize(torch_device)
    started = time.perf_counter()
    losses = [step(batch, warmup + i) for i in range(steps)]  # float(loss) waits for each step
    seconds = time.perf_counter() - started
    return {"method": method_name, "device": str(torch_device), "amp": "off" if amp_dtype is None else
            str(amp_dtype).removeprefix("torch."), "batch": len(images), "images_per_s": steps * len(images) / seconds,
            "loss_finite": bool(np.isfinite(losses).all())}


def training_rows(images: np.ndarray, backbone: str, *, cuda: bool, steps: int = 5) -> list[dict[str, Any]]:
    """Every method at every configuration of :func:`configurations`."""
    return [images_per_second(m, backbone, images, device, amp, steps=steps)
            for m in METHODS for device, amp in configurations(cuda)]


def markdown_rows(rows: list[dict[str, Any]]) -> list[str]:
    """A markdown table of training rows, with each CUDA row's speed-up over the same method's CPU row."""
    cpu = {r["method"]: r["images_per_s"] for r in rows if r["device"] == "cpu"}
    lines = ["| method | device | AMP | batch | images/s | vs CPU | loss finite |", "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        ratio = r["images_per_s"] / cpu[r["method"]] if r["method"] in cpu else float("nan")
        lines.append(f"| {r['method']} | {r['device']} | {r['amp']} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{ratio:.1f}x | {r['loss_finite']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder with checkpoint.pt (its training images and settings are used)")
    parser.add_argument("--batch", type=int, default=16, help="images per step (default: 16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row (default: 5)")
    args = parser.parse_args(argv)
    rows = training_rows(*run_batch(args.run, args.batch), cuda=cuda_available(), steps=args.steps)
    print("\n".join(markdown_rows(rows)))
    return 0


def run_batch(run: str, batch: int) -> tuple[np.ndarray, str]:
    """A batch of a run's own good training images at its size, and its teacher's name."""
    from sdk.datasets import load_model_dataset, load_prepared
    from train.checkpoint import load_checkpoint

    metadata, _ = load_checkpoint(run)
    train = load_model_dataset(metadata).train[:batch]
    return load_prepared(train, metadata.image_size, progress=False), metadata.backbone


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
