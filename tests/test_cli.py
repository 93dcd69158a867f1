"""The rdedge command: help on every sub-command, and evaluate / predict / bench / train on real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rdedge.main import build_parser, main

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ["train", "export", "build-engine", "export-openvino", "export-triton", "evaluate", "predict", "view",
            "bench", "demo"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdedge", *args], cwd=REPO, capture_output=True, text=True)


def test_every_subcommand_has_help():
    top = run_cli("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "usage: rdedge " + command in result.stdout
        assert "--" in result.stdout


def test_evaluate_json_from_detector_outputs(tiny_run, bottle_subset: Path, capsys):
    assert main(["evaluate", str(tiny_run[0]), "--data", str(bottle_subset), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1", "n_images"):
        assert key in report
    assert report["n_images"] == 10 and report["n_anomalous"] == 6
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1"):
        assert 0.0 <= report[key] <= 1.0
    # without --data the model's own training data is used
    assert main(["evaluate", str(tiny_run[1].path), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 10


def test_evaluate_elpv_has_no_pixel_metrics(tiny_onnx: Path, capsys):
    pytest.importorskip("elpv_dataset")
    # ELPV test set is large; the point here is the null pixel metrics, so use a 64-image slice via the API
    from sdk import Detector
    from sdk.datasets import load_dataset
    from sdk.evaluate import evaluate_detector

    ds = load_dataset("elpv:mono")
    subset = ds.test[:32] + ds.test[-32:]
    report = evaluate_detector(Detector(tiny_onnx), subset, progress=False)
    assert report["pixel_auroc"] is None and report["aupro"] is None
    assert report["image_auroc"] is not None and report["n_images"] == 64


def test_predict_prints_verdicts_and_writes_overlays(tiny_run, bottle_subset: Path, tmp_path: Path, capsys):
    """Inputs from two folders share file names (000.png): each still gets its own overlay."""
    folder = bottle_subset / "test" / "broken_large"
    extra = next((bottle_subset / "test" / "good").glob("*.png"))
    code = main(["predict", str(tiny_run[0]), str(folder), str(extra), "--out", str(tmp_path)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("input") and len(lines) == 1 + 3 + 1
    assert all(line.split("\t")[-1] in ("OK", "ANOMALY") for line in lines[1:])
    overlays = sorted(tmp_path.glob("*_overlay.png"))
    assert len(overlays) == 4
    image = cv2.imread(str(overlays[0]))
    assert image.shape == (256, 256, 3)


def test_predict_reports_unreadable_files_and_fails(tiny_run, tmp_path: Path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["predict", str(tiny_run[0]), str(bad)]) == 1
    assert "cannot decode" in capsys.readouterr().err


def test_bench_json_has_both_runtimes_and_the_ratio(tiny_run, tmp_path: Path, capsys):
    out = tmp_path / "bench.md"
    args = ["bench", str(tiny_run[0]), "--batch-sizes", "1", "2", "--warmup", "1", "--iterations", "3",
            "--out", str(out), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    names = set(report["configurations"])
    assert names == {"onnxruntime/batch1", "onnxruntime/batch2", "pytorch+scipy/batch1", "pytorch+scipy/batch2"}
    for config in report["configurations"].values():
        assert config["median_ms"] > 0 and config["p90_ms"] >= config["median_ms"] * 0.5
        assert config["p99_ms"] >= config["p90_ms"] and config["images_per_s"] > 0
    assert set(report["speedup"]) == {"batch1", "batch2"}
    table = out.read_text()
    assert "| onnxruntime | 1 |" in table and "speed-up" in table


def test_train_without_resnet_weights_fails_clearly(bottle_subset: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    code = main(["train", "--data", str(bottle_subset), "--backbone", "resnet18", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "resnet18-f37072fd.pth" in err and "--weights" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_missing_model_and_unexported_run(tmp_path: Path, capsys):
    assert main(["evaluate", str(tmp_path / "nothing.onnx")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "x.png"]) == 2
    assert "rdedge export" in capsys.readouterr().err


def test_parser_builds_without_torch_imports():
    assert build_parser().prog == "rdedge"


def test_bench_on_an_onnx_file_without_the_peer(tiny_onnx: Path, tmp_path: Path, capsys):
    args = ["bench", str(tiny_onnx), "--no-peer", "--batch-sizes", "2", "--warmup", "0", "--iterations", "2",
            "--out", str(tmp_path / "b.md"), "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["configurations"]) == {"onnxruntime/batch2"} and report["speedup"] == {}


def test_predict_video_writes_an_annotated_video_and_a_csv_log(tiny_run, bottle_subset: Path, tmp_path: Path,
                                                               capsys):
    from benchmarks.soak import bottle_frames, write_video

    video = write_video(bottle_frames(bottle_subset, 128), tmp_path / "line3.avi", 12)
    image = next((bottle_subset / "test" / "good").glob("*.png"))
    out, log = tmp_path / "out", tmp_path / "log.csv"
    assert main(["predict", str(tiny_run[0]), str(video), str(image), "--out", str(out), "--log", str(log)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines[1:13]] == [f"{video}#{i}" for i in range(12)]
    annotated = out / "line3_overlay.mp4"
    capture = cv2.VideoCapture(str(annotated))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    ok, frame = capture.read()
    assert ok and frame.shape == (128, 128, 3)
    assert not list(out.glob(".*tmp*")), "no temporary file left behind"
    import csv

    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 13 and [r["frame"] for r in rows[:12]] == [str(i) for i in range(12)]
    assert rows[12]["source"] == str(image) and rows[12]["frame"] == ""
    assert all(float(r["score"]) > 0 and r["is_anomaly"] in ("True", "False") for r in rows)


@pytest.mark.parametrize("kind", ["http_mjpeg", "rtsp"])
def test_predict_live_stream_with_max_frames_and_json_logs(tiny_run, bottle_subset: Path, tmp_path: Path, capsys,
                                                           kind):
    from benchmarks.soak import bottle_frames

    from .loopback import MjpegServer
    from .rtsp_server import RtspServer

    camera = (MjpegServer if kind == "http_mjpeg" else RtspServer)(bottle_frames(bottle_subset, 96))
    camera.start()
    try:
        for suffix, isolate in ((".jsonl", []), (".json", ["--isolate"])):  # --isolate: read in a child process
            log = tmp_path / f"log{suffix}"
            assert main(["predict", str(tiny_run[0]), camera.url, "--max-frames", "4", "--log", str(log),
                         *isolate]) == 0
            text = log.read_text()
            records = json.loads(text) if suffix == ".json" else [json.loads(x) for x in text.splitlines()]
            assert len(records) == 4 and all(r["source"] == camera.url for r in records)
            frames = [r["frame"] for r in records]
            assert frames == sorted(set(frames))
    finally:
        camera.kill()
    assert "read " in capsys.readouterr().err


def test_predict_log_suffix_and_missing_video_are_clear_errors(tiny_run, tmp_path: Path, capsys):
    assert main(["predict", str(tiny_run[0]), str(tmp_path / "x.png"), "--log", str(tmp_path / "log.txt")]) == 2
    assert ".csv, .jsonl, .json" in capsys.readouterr().err
    assert main(["predict", str(tiny_run[0]), str(tmp_path / "missing.mp4")]) == 1
    assert "video file not found" in capsys.readouterr().err


def test_predict_log_appends_to_an_existing_log(tiny_run, bottle_subset: Path, tmp_path: Path, capsys):
    """Defect: --log said "appended" but truncated the file. Each format now continues an existing log: a CSV keeps
    one header, a .json keeps its records; a CSV with other columns is refused, not mixed."""
    import csv

    images = sorted((bottle_subset / "test" / "good").glob("*.png"))[:2]
    for suffix in (".csv", ".jsonl", ".json"):
        log = tmp_path / f"line{suffix}"
        for image in images:  # two runs, one image each
            assert main(["predict", str(tiny_run[0]), str(image), "--log", str(log)]) == 0
        text = log.read_text()
        if suffix == ".csv":
            rows = list(csv.DictReader(log.open()))
            assert text.count("source,frame,timestamp") == 1 and [r["source"] for r in rows] == list(map(str, images))
            assert all(float(r["pixel_threshold"]) > 0 for r in rows)
        else:
            records = json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
            assert [r["source"] for r in records] == list(map(str, images))
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("when,what\n1,2\n")
    assert main(["predict", str(tiny_run[0]), str(images[0]), "--log", str(foreign)]) == 2
    assert "other columns" in capsys.readouterr().err and foreign.read_text() == "when,what\n1,2\n"


def test_an_export_refusal_is_one_clear_message(tiny_run, tmp_path: Path, monkeypatch, capsys):
    """Defect: a refused self-check ended `rdedge export` with a traceback (ExportCheckError was no RdedgeError).
    Here the FP16 gate is raised above what any graph can reach, so the real check refuses the real graph."""
    import export.onnx

    monkeypatch.setitem(export.onnx.MIN_MAP_CORRELATION, "fp16", 1.01)
    out = tmp_path / "refused.onnx"
    assert main(["export", str(tiny_run[0]), "--precision", "fp16", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rdedge export: error: fp16 graph departs from FP32") and "Traceback" not in err
    assert not out.exists()


def test_training_length_has_one_default():
    """Defect: TrainConfig defaulted to 20 epochs while the command and the README said 30. The default is now
    1,000 optimiser steps, in the config, the command and the README alike."""
    from train.config import DEFAULT_STEPS, TrainConfig
    from train.trainer import training_epochs

    parsed = build_parser().parse_args(["train", "--data", "d", "--out", "o"])
    config = TrainConfig(data="d", out="o")
    assert (config.epochs, config.steps) == (parsed.epochs, parsed.steps) == (None, None)
    assert DEFAULT_STEPS == 1000 and training_epochs(config, steps_per_epoch=12) == 84  # bottle: 188 images, batch 16
    assert training_epochs(TrainConfig(data="d", out="o", epochs=30), steps_per_epoch=12) == 30
    assert "1,000 optimiser steps" in (REPO / "README.md").read_text()


def test_exported_models_carry_no_local_paths(tiny_run, bottle_subset: Path, tmp_path: Path, capsys):
    """Defect: exported metadata held the training data folder, the run folder and the weights file as absolute
    paths. They keep names only; evaluate finds the data with --data, or in its run folder's train_log.json."""
    import shutil

    from sdk import Detector

    run, report = tiny_run
    text = Detector(report.path).metadata.to_json()
    for local in (str(bottle_subset), str(run), str(bottle_subset.parent)):
        assert local not in text

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    assert not [s for s in strings(json.loads(text)) if Path(s).is_absolute()]
    training = Detector(report.path).metadata.training
    assert training["data"] == bottle_subset.name and training["out"] == run.name
    shipped = tmp_path / "customer" / "model.onnx"  # the model alone, away from its run folder
    shipped.parent.mkdir()
    shutil.copy(report.path, shipped)
    assert main(["evaluate", str(shipped), "--json", "--quiet"]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["evaluate", str(shipped), "--data", str(bottle_subset), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 10


def test_train_refuses_a_device_it_cannot_use(capsys):
    assert main(["train", "--data", "elpv:mono", "--out", "unused", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err
    if not __import__("torch").cuda.is_available():
        assert main(["train", "--data", "elpv:mono", "--out", "unused", "--device", "cuda:1"]) == 2
        assert "PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_view_takes_a_display_rate_above_zero_only():
    parser = build_parser()
    assert parser.parse_args(["view", "model.onnx", "0", "--display-fps", "2.5"]).display_fps == 2.5
    assert parser.parse_args(["view", "model.onnx", "0"]).display_fps is None  # sdk.view.DISPLAY_FPS then
    for bad in ("0", "-3", "fast", "inf", "nan"):
        with pytest.raises(SystemExit):
            parser.parse_args(["view", "model.onnx", "0", "--display-fps", bad])


def export_head_option(tiny_run, out: Path, *options: str):
    """The tiny run's recipe detector, and the run exported again to ``out`` with the head ``options`` (the export's
    self-check runs on 2 images)."""
    from sdk import Detector

    assert main(["export", str(tiny_run[0]), "--out", str(out), *options, "--check-images", "2", "--quiet"]) == 0
    return Detector(tiny_run[1].path), Detector(out)


def test_export_changes_the_map_blur_and_its_self_check_follows(tiny_run, tmp_path: Path):
    """``rdedge export --map-sigma 8`` on a real run: the graph's map is the recipe map's fused distances under a wider
    Gaussian (flatter: a lower peak on the same image), the export's check against the papers' SciPy reference passes
    at that σ, and the metadata and thresholds follow."""
    recipe, wide = export_head_option(tiny_run, tmp_path / "wide.onnx", "--map-sigma", "8")
    assert wide.metadata.graph_options["sigma"] == 8.0
    assert wide.metadata.graph_options["map_strides"] == [8, 16]
    assert wide.threshold != recipe.threshold
    image = np.full((128, 128, 3), 90, np.uint8)
    image[40:60, 50:54] = 200  # a thin bright defect
    assert wide(image).anomaly_map.max() < recipe(image).anomaly_map.max()


def test_export_pools_the_features_and_its_self_check_follows(tiny_run, bottle_images, tmp_path: Path):
    """``rdedge export --map-pool 3`` on a real run: the export's check against the SciPy reference (``uniform_filter``
    then cosine) passes, the metadata records the pooling, thresholds are calibrated again on the new scores, and the
    map of a real test image changes."""
    recipe, pooled = export_head_option(tiny_run, tmp_path / "pooled.onnx", "--map-pool", "3")
    assert pooled.metadata.graph_options["feature_pool"] == 3
    assert pooled.threshold != recipe.threshold
    image = bottle_images["broken"]
    assert not np.allclose(pooled(image).anomaly_map, recipe(image).anomaly_map, atol=1e-4)


def test_export_changes_the_image_score_and_recalibrates(tiny_run, tmp_path: Path, capsys):
    """``rdedge export --image-score top_mean --top-fraction 0.01 --map-strides 4,8,16 --refinement`` on a real run
    (trained with the recipe's head: strides 8+16, top 0.1 %): the graph's score is the refined mean of the top 1 % of
    its own all-scale map, recorded in the metadata, with thresholds calibrated again on that score."""
    recipe, det = export_head_option(tiny_run, tmp_path / "top.onnx", "--image-score", "top_mean", "--top-fraction",
                                     "0.01", "--map-strides", "4,8,16", "--refinement")
    assert recipe.metadata.graph_options == {"combine": "sum", "refinement": False, "image_score": "top_mean",
                                             "top_fraction": 0.001, "map_strides": [8, 16], "sigma": 4.0,
                                             "feature_pool": 1}
    assert det.metadata.graph_options == {"combine": "sum", "refinement": True, "image_score": "top_mean",
                                          "top_fraction": 0.01, "map_strides": [4, 8, 16], "sigma": 4.0,
                                          "feature_pool": 1}
    assert det.threshold != recipe.threshold
    image = np.full((128, 128, 3), 90, np.uint8)
    result = det(image)
    top = np.sort(result.anomaly_map.ravel())[-round(128 * 128 * 0.01):].mean()
    assert result.score > top  # refined: (1 + v) times the top-pixel mean
    assert not np.allclose(result.anomaly_map, recipe(image).anomaly_map)  # stride 4 is back in the map
    for contradiction in (["--refinement", "--no-refinement"], ["--top-fraction", "0"], ["--map-strides", "2,8"],
                          ["--map-sigma", "0"], ["--map-pool", "2"], ["--map-pool", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["export", str(tiny_run[0]), *contradiction])
        assert exit_info.value.code == 2
        assert "--" in capsys.readouterr().err
