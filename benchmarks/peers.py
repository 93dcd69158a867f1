"""rdedge against what anomalib users run on a CPU: anomalib 2.7's RD4AD (ResNet-18) through its ONNX in ONNX
Runtime and through its own ``OpenVINOInferencer``, beside rdedge's ResNet-18 and EfficientNet-Lite0 graphs on ONNX
Runtime and OpenVINO, FP32 and INT8, batch 1 and 8.

anomalib is installed into a virtual environment this benchmark creates for itself (``.cache/peers/``, never the
project's dependencies); the timing runs in one process of that environment, with rdedge's ``sdk`` imported from
this repository, in interleaved rounds (each round times every row once per batch size), on real bottle images
resized to 256 x 256 beforehand (every row gets the same uint8 images; anomalib's graphs take that size only).

What each timing includes:

* rdedge (``sdk.Detector.predict_batch``): input checks, host resize (a no-op at 256), the whole graph (normalisation,
  network, anomaly map, blur, score), result objects.
* anomalib ONNX: its inferencer's host pre-processing (float32, /255, NCHW) and ``InferenceSession.run`` of its
  exported graph (pre-processor, model and post-processor inside).
* anomalib OpenVINO: ``OpenVINOInferencer.predict`` as its users call it (host pre-processing, compiled model,
  output dictionary); its defaults (device ``AUTO``, OpenVINO's own precision choice, bf16 on CPUs with AMX or
  AVX512-BF16), and a second row with FP32 compute forced, like for like with rdedge's OpenVINO rows.

No model hub is reachable here: anomalib's ResNet-18 is built with ``pre_trained=False`` and rdedge's ResNet-18 run
uses a randomly initialised ResNet-18 file as its "ImageNet" teacher (``--r18-run`` takes a real one): random
weights change no timing, but those rows have no meaningful accuracy. The Lite0 rows are the bottle model of
``benchmarks.accuracy`` (real weights); its INT8 accuracy is measured beside the times.

Run: ``python -m benchmarks.peers`` → ``benchmarks/results/peers.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import venv
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = REPO / ".cache" / "peers" / "anomalib-2.7"
PEER_PACKAGES = ("anomalib==2.7.0", "torch==2.14.1", "torchvision==0.29.1", "onnxscript", "openvino>=2024.4",
                 "onnxruntime>=1.17", "onnx>=1.17", "opencv-python-headless>=4.8", "tqdm>=4.60")
"""What the peer environment holds: anomalib and what its export needs, and what ``sdk`` needs to run beside it."""
IMAGE_SIDE = 256
BATCH_SIZES = (1, 8)
REFERENCE_ROW = "anomalib R18 OpenVINOInferencer (its defaults)"
BF16 = {"inference_precision": "bf16"}
"""The OpenVINO option that gives rdedge's FP32 graph the compute anomalib's inferencer uses by default on CPUs with
AMX or AVX512-BF16 (rdedge's own default pins FP32)."""


def ensure_peer_venv(path: Path = PEER_VENV) -> Path:
    """The peer environment's Python, created and filled on first use (reinstalled when the package list changes).

    Raises:
        RuntimeError: pip failed (its output says why).
    """
    python = path / "bin" / "python"
    stamp = path / ".rdedge-peers"
    want = json.dumps(PEER_PACKAGES)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return python
    print(f"[peers] installing {', '.join(PEER_PACKAGES)} into {path} (a few minutes the first time)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=not stamp.exists()).create(path)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"pip could not install the peer environment:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    stamp.write_text(want)
    return python


def random_resnet18_file(path: Path) -> Path:
    """A randomly initialised torchvision ResNet-18 state dict, standing in for the ImageNet file (timing only)."""
    import torch
    import torchvision

    if not path.exists():
        torch.manual_seed(0)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def prepare_rdedge_models(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """FP32 and INT8 graphs of the Lite0 bottle run and of a ResNet-18 run (trained for one epoch on the
    stand-in weights unless ``--r18-run`` is given) → ``{teacher: {precision: path}}``."""
    from export.onnx import export_onnx
    from train.config import TrainConfig
    from train.trainer import train

    from .accuracy import mvtec_root

    r18 = Path(args.r18_run) if args.r18_run else Path(args.runs) / "r18-random-teacher"
    if not (r18 / "checkpoint.pt").exists():
        weights = random_resnet18_file(Path(args.runs) / "resnet18-random.pth")
        train(TrainConfig(data=mvtec_root(), category="bottle", out=str(r18), backbone="resnet18",
                          weights=str(weights), epochs=1, image_size=IMAGE_SIDE, seed=0), progress=not args.quiet)
    models = {}
    for teacher, run in (("Lite0", Path(args.lite0_run)), ("R18", r18)):
        if not (run / "model.onnx").exists():
            export_onnx(run, progress=not args.quiet)
        if not (run / "model_int8.onnx").exists():
            export_onnx(run, precision="int8", calib_images=args.calib_images, progress=not args.quiet)
        files = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
        models[teacher] = {precision: str((run / name).resolve()) for precision, name in files.items()}
    return models


def bottle_images(n: int) -> list[str]:
    """``n`` bottle test images (good and defective), evenly spaced."""
    from .accuracy import mvtec_root

    files = sorted((Path(mvtec_root()) / "bottle" / "test").rglob("*.png"))
    return [str(p.resolve()) for p in files[:: max(1, len(files) // n)][:n]]


# --- in the peer environment ---------------------------------------------------------------------------------


def anomalib_runners(folder: Path, threads: int) -> dict[str, tuple[str, Any]]:
    """anomalib RD4AD-R18 exported to ONNX and OpenVINO → ``{row: (includes, fn(batch uint8 NHWC))}``."""
    import numpy as np
    import onnxruntime as ort
    from anomalib.deploy import OpenVINOInferencer
    from anomalib.models import ReverseDistillation

    model = ReverseDistillation(backbone="resnet18", pre_trained=False).eval()
    onnx_path = model.to_onnx(folder, input_size=(IMAGE_SIDE, IMAGE_SIDE))
    xml_path = model.to_openvino(folder, input_size=(IMAGE_SIDE, IMAGE_SIDE))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def onnx_call(batch: np.ndarray) -> Any:
        return session.run(None, {input_name: OpenVINOInferencer.pre_process(batch)})

    inferencer = OpenVINOInferencer(xml_path)
    forced = OpenVINOInferencer(xml_path, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    return {
        "anomalib R18 ONNX in onnxruntime": ("host pre-processing + session.run", onnx_call),
        REFERENCE_ROW: ("OpenVINOInferencer.predict (host pre/post)", inferencer.predict),
        "anomalib R18 OpenVINOInferencer, FP32 compute": ("same, INFERENCE_PRECISION_HINT f32", forced.predict),
    }


def rdedge_runners(models: dict[str, dict[str, str]], threads: int) -> dict[str, tuple[str, Any]]:
    """rdedge graphs through ``sdk.Detector`` on both CPU runtimes → ``{row: (includes, fn)}``."""
    from sdk import Detector

    runners = {}
    for teacher, files in models.items():
        for precision, path in files.items():
            for backend in ("onnxruntime", "openvino"):
                option = {"intra_op_threads": threads} if backend == "onnxruntime" else {"threads": threads}
                detector = Detector(path, backend=backend, **option)
                runners[f"rdedge {teacher} {precision.upper()} {backend}"] = (
                    "Detector.predict_batch (whole graph)", lambda b, d=detector: d.predict_batch(b, rgb=True))
            if precision == "fp32":  # the compute anomalib's inferencer gets by default, asked for explicitly
                detector = Detector(path, backend="openvino", threads=threads, **BF16)
                runners[f"rdedge {teacher} FP32 openvino, bf16 compute (opt-in)"] = (
                    "Detector.predict_batch (whole graph), inference_precision='bf16' as anomalib's default",
                    lambda b, d=detector: d.predict_batch(b, rgb=True))
    return runners


def measure(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Time every row at every batch size in interleaved rounds (runs in the peer environment)."""
    import cv2
    import numpy as np

    from benchmarks.latency import summarize, time_calls

    images = np.stack([cv2.resize(cv2.imread(p)[:, :, ::-1], (IMAGE_SIDE, IMAGE_SIDE), interpolation=cv2.INTER_AREA)
                       for p in config["images"]])
    with tempfile.TemporaryDirectory() as tmp:
        runners = {**anomalib_runners(Path(tmp), config["threads"]),
                   **rdedge_runners(config["models"], config["threads"])}
        times: dict[tuple[str, int], list[Any]] = {(n, b): [] for n in runners for b in BATCH_SIZES}
        skipped: dict[tuple[str, int], str] = {}
        per_round = max(1, config["iterations"] // config["rounds"])
        for _ in range(config["rounds"]):
            for batch in BATCH_SIZES:
                chunk = np.ascontiguousarray(images[:batch])
                for name, (_, fn) in runners.items():
                    if (name, batch) in skipped:
                        continue
                    try:
                        times[name, batch].append(time_calls(lambda f=fn, c=chunk: f(c), 2, per_round))
                    except Exception as exc:  # a peer graph exported without a batch axis: say so, go on
                        skipped[name, batch] = f"{type(exc).__name__}: {str(exc)[:120]}"
    rows = []
    for (name, batch), parts in times.items():
        row: dict[str, Any] = {"row": name, "batch": batch, "includes": runners[name][0]}
        if parts:
            row.update(summarize(np.concatenate(parts), batch))
        else:
            row["skipped"] = skipped.get((name, batch), "not run")
        rows.append(row)
    return rows


# --- the report ------------------------------------------------------------------------------------------------


def int8_accuracy(models: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    """Image/pixel AUROC of the Lite0 bottle model's FP32 and INT8 graphs on the bottle test set, in both runtimes."""
    from sdk import Detector
    from sdk.datasets import load_model_dataset
    from sdk.evaluate import evaluate_detector

    rows = []
    for precision, path in models["Lite0"].items():
        variants = [("onnxruntime", "onnxruntime", {}), ("openvino", "openvino", {})]
        if precision == "fp32":
            variants.append(("openvino, bf16 compute (opt-in)", "openvino", BF16))
        for name, backend, options in variants:
            detector = Detector(path, backend=backend, **options)
            dataset = load_model_dataset(detector.metadata, model_path=Path(path))
            metrics = evaluate_detector(detector, dataset.test, progress=False)
            rows.append({"model": f"Lite0 {precision.upper()}", "backend": name,
                         "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"]})
    return rows


FINDINGS = (
    "anomalib's `OpenVINOInferencer` with its defaults computes in bf16 on a CPU with AMX or AVX512-BF16 (OpenVINO's "
    "own choice): its FP32 model runs 2.6x faster than with FP32 compute forced. rdedge pins FP32 compute "
    "(`inference_precision='f32'`, the same numbers as every other backend); the rows marked bf16 compute ask "
    "OpenVINO for what anomalib gets by default (`Detector(model, backend='openvino', inference_precision='bf16')`): "
    "a like-for-like comparison, with scores that move by about 1 % (`benchmarks/results/runtimes.md`)."
)


def notes(models: dict[str, dict[str, str]]) -> list[str]:
    """What the rdedge INT8 files hold (layers the export kept FP32), and the findings above."""
    from .runtimes import int8_note

    lines = ["", FINDINGS]
    for teacher, files in models.items():
        lines += [line.replace("`model_int8.onnx`", f"{teacher} `model_int8.onnx`") for line in int8_note(
            Path(files["int8"]))]
    return lines


def markdown(rows: list[dict[str, Any]], accuracy: list[dict[str, Any]], args: argparse.Namespace,
             versions: dict[str, str], models: dict[str, dict[str, str]]) -> str:
    from .latency import processor_name

    lines = [
        "# rdedge against anomalib on this CPU: ONNX Runtime and OpenVINO, FP32 and INT8",
        "",
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores ({platform.machine()}, {processor_name()}), "
        f"{args.threads} threads for rdedge and anomalib's ONNX (anomalib's OpenVINO rows: its own defaults); "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {args.rounds} interleaved rounds, {args.iterations} timed calls per row and batch size, one process; "
        f"real bottle test images resized to {IMAGE_SIDE} x {IMAGE_SIDE} beforehand. Reproduce: "
        "`python -m benchmarks.peers`.",
        "",
        "| row | batch | median ms | p90 ms | images/s | speed-up vs anomalib OpenVINO (defaults) | includes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for batch in BATCH_SIZES:
        base = next((r for r in rows if r["row"] == REFERENCE_ROW and r["batch"] == batch and "median_ms" in r), None)
        for r in [r for r in rows if r["batch"] == batch]:
            if "median_ms" not in r:
                lines.append(f"| {r['row']} | {batch} | n/a | n/a | n/a | n/a | {r['skipped']} |")
                continue
            ratio = f"{base['median_ms'] / r['median_ms']:.2f}x" if base else "n/a"
            lines.append(f"| {r['row']} | {batch} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                         f"{r['images_per_s']:.1f} | {ratio} | {r['includes']} |")
    lines += ["", "Accuracy of the Lite0 bottle model (the ResNet-18 rows use random teacher weights: timing only):",
              "", "| model | backend | image AUROC | pixel AUROC |", "|---|---|---:|---:|"]
    for a in accuracy:
        lines.append(f"| {a['model']} | {a['backend']} | {a['image_auroc']:.4f} | {a['pixel_auroc']:.4f} |")
    return "\n".join(lines + notes(models)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lite0-run", default="runs/accuracy/bottle/rd4ad",
                        help="rdedge Lite0 bottle run (default: benchmarks.accuracy's)")
    parser.add_argument("--r18-run", default=None,
                        help="rdedge ResNet-18 run (default: one epoch on a random-weight teacher, timing only)")
    parser.add_argument("--runs", default="runs/peers", help="folder for the ResNet-18 run and stand-in weights")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads (default: all cores)")
    parser.add_argument("--iterations", type=int, default=60, help="timed calls per row and batch size")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--calib-images", type=int, default=64, help="INT8 calibration images when exporting")
    parser.add_argument("--venv", default=str(PEER_VENV), help="the peer environment (created when missing)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "peers.md"), help="markdown output")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # internal: run in the peer venv
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.measure:
        config = json.loads(Path(args.measure).read_text())
        print(json.dumps(measure(config)))
        return 0
    from sdk.fileio import write_text_atomic

    python = ensure_peer_venv(Path(args.venv))
    models = prepare_rdedge_models(args)
    config = {"models": models, "images": bottle_images(max(BATCH_SIZES)), "threads": args.threads,
              "iterations": args.iterations, "rounds": args.rounds}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(config, handle)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as work:  # OpenVINOInferencer writes an openvino_cache folder where it runs
        done = subprocess.run([str(python), "-m", "benchmarks.peers", "--measure", handle.name], capture_output=True,
                              text=True, cwd=work, env=env)
    os.unlink(handle.name)
    if done.returncode:
        raise SystemExit(f"the peer measurement failed:\n{done.stderr[-4000:]}")
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    versions = json.loads(subprocess.run(
        [str(python), "-c", "import json, anomalib, openvino, onnxruntime; print(json.dumps({'anomalib': "
         "anomalib.__version__, 'OpenVINO': openvino.__version__.split('-')[0], 'onnxruntime': "
         "onnxruntime.__version__}))"], capture_output=True, text=True, check=True).stdout)
    text = markdown(rows, int8_accuracy(models), args, versions, models)
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
