"""Shared fixtures: real MVTec bottle data (downscaled subset), real KolektorSDD strips, and tiny trained runs.

``RDEDGE_MVTEC_ROOT`` points at the MVTec AD root (default: ``../shared/data/mvtec`` beside the repository),
``RDEDGE_INDUSTRIAL_ROOT`` at the industrial sets (default: ``../shared/data/industrial``). Where they are absent,
tests that need them skip with the reason, except under CI (``CI`` set), where a missing dataset fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.view import CHROMIUM_ARGS  # one list of Chromium's flags for the browser tests and the benchmark

REPO = Path(__file__).resolve().parents[1]
MVTEC_ROOT = Path(os.environ.get("RDEDGE_MVTEC_ROOT", REPO.parent / "shared" / "data" / "mvtec"))
INDUSTRIAL_ROOT = Path(os.environ.get("RDEDGE_INDUSTRIAL_ROOT", REPO.parent / "shared" / "data" / "industrial"))
SUBSET_SIZE = 256  # side of the downscaled copies
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, whose python3-opencv is built with GStreamer


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def require(path: Path, what: str) -> Path:
    """Skip (or fail under CI) when real test data is missing."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (set RDEDGE_MVTEC_ROOT / RDEDGE_INDUSTRIAL_ROOT to the data roots)"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must have the data", pytrace=False)
    pytest.skip(message)


def unavailable(reason: str) -> None:
    """Skip for want of a system tool or package, or fail under CI, whose set-up installs them."""
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must run these checks (scripts/system_packages.sh installs what they need)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gstreamer_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment on Debian's Python that sees its OpenCV (with GStreamer), plus onnxruntime and pytest."""
    probe = "import cv2, sys; i = cv2.getBuildInformation(); sys.exit('GStreamer:                   YES' not in i)"
    if not SYSTEM_PYTHON.exists() or subprocess.run([SYSTEM_PYTHON, "-c", probe]).returncode:
        unavailable(f"{SYSTEM_PYTHON} has no OpenCV with GStreamer (apt-get install python3-opencv)")
    venv = tmp_path_factory.mktemp("gst") / "venv"
    made = subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)], capture_output=True,
                          text=True)
    if made.returncode:
        unavailable(f"cannot make a virtual environment on {SYSTEM_PYTHON} (apt-get install python3-venv): "
                    f"{made.stderr.strip()[-200:]}")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "onnxruntime", "tqdm", "pytest>=9"],
                   check=True)
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def bottle_dir() -> Path:
    """The original MVTec AD bottle category."""
    return require(MVTEC_ROOT / "bottle", "MVTec AD bottle")


def _copy_resized(src: Path, dst: Path, interpolation: int) -> None:
    image = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), cv2.resize(image, (SUBSET_SIZE, SUBSET_SIZE), interpolation=interpolation))


@pytest.fixture(scope="session")
def bottle_subset(bottle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-layout copy of real bottle images, downscaled to 256 px for speed.

    30 good training images; test: 4 good, 3 broken_large, 3 contamination, with their masks.
    """
    root = tmp_path_factory.mktemp("mvtec") / "bottle"
    for p in sorted((bottle_dir / "train" / "good").glob("*.png"))[:30]:
        _copy_resized(p, root / "train" / "good" / p.name, cv2.INTER_AREA)
    for defect, n in (("good", 4), ("broken_large", 3), ("contamination", 3)):
        for p in sorted((bottle_dir / "test" / defect).glob("*.png"))[:n]:
            _copy_resized(p, root / "test" / defect / p.name, cv2.INTER_AREA)
            if defect != "good":
                mask = bottle_dir / "ground_truth" / defect / f"{p.stem}_mask.png"
                _copy_resized(mask, root / "ground_truth" / defect / mask.name, cv2.INTER_NEAREST)
    return root


@pytest.fixture(scope="session")
def tiny_run(bottle_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """RD4AD / EfficientNet-Lite0 trained for 3 epochs at 128 px on the bottle subset, then exported to ONNX."""
    from export.onnx import export_onnx
    from train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    # bn_freeze=0: in a run of a few steps the recipe's frozen last step would train on batch-norm running statistics
    # that have barely left their initial values; these fixtures test export, INT8 and calibration, and bn_freeze
    # has its own tests (test_train_export.py, test_resume.py).
    config = TrainConfig(data=str(bottle_subset), out=str(out), epochs=3, image_size=128, batch_size=8, seed=0,
                         bn_freeze=0.0)
    train(config, progress=False)
    report = export_onnx(out, check_images=4)
    return out, report


@pytest.fixture(scope="session")
def tiny_onnx(tiny_run) -> Path:
    return tiny_run[1].path


@pytest.fixture(scope="session")
def precision_models(tiny_run) -> dict[str, Path]:
    """The tiny run exported at each precision: FP32, FP16 and INT8 (calibrated on 13 good images).

    Its INT8 gate runs in ONNX Runtime only: the tiny model's selection set has three good images, where one rank
    flipped by OpenVINO's rounding moves the image AUROC by 0.11 and keeps nearly every layer FP32, and the tests of
    this file are about the INT8 graph's structure. The gate in both runtimes has its own tests
    (test_int8_layers)."""
    from export import int8_layers
    from export.onnx import export_onnx

    run, report = tiny_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(int8_layers, "gate_runtimes", lambda: ["onnxruntime"])
        int8 = export_onnx(run, precision="int8", check_images=4, calib_images=13).path  # not a multiple of 8
    return {"fp32": report.path, "fp16": export_onnx(run, precision="fp16", check_images=4).path, "int8": int8}


@pytest.fixture(scope="session")
def quantized(tiny_run, tmp_path_factory):
    """The tiny run's FP32 graph, the same graph with every network layer INT8 (calibrated once on its good training
    images), and the selection set of its held-out good images: ``(fp32, int8, selection)``. Every layer quantized
    whatever the gate would keep in FP32, which depends on rounding that differs from one CPU to another."""
    import onnx

    from export.precision import quantize_int8
    from sdk.datasets import load_model_dataset, load_prepared
    from sdk.detector import Detector
    from train.selection import SelectionSet

    fp32_path = tiny_run[1].path
    metadata = Detector(fp32_path).metadata
    dataset = load_model_dataset(metadata, model_path=fp32_path)
    calibration = load_prepared(dataset.train, metadata.image_size, progress=False)
    good = load_prepared(dataset.validation, metadata.image_size, progress=False)
    int8_path = tmp_path_factory.mktemp("int8") / "int8.onnx"
    quantize_int8(fp32_path, int8_path, calibration)
    return onnx.load(fp32_path), onnx.load(int8_path), SelectionSet.from_good(good, seed=0)


WIDE_SIZE = "160x64"
"""Height x width of the non-square test model: KolektorSDD strips are 256 wide and ~645 tall (aspect ~2.5)."""


@pytest.fixture(scope="session")
def kolektor_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-layout view (symbolic links) of real KolektorSDD strips, at their native size.

    24 good training images; test: 3 good and 3 defective (cracks), with their masks.
    """
    source = require(INDUSTRIAL_ROOT / "kolektorsdd", "KolektorSDD (industrial sets)")
    root = tmp_path_factory.mktemp("industrial") / "kolektorsdd"
    picks = {("train", "good"): 24, ("test", "good"): 3, ("test", "defect"): 3}
    for (split, kind), n in picks.items():
        (root / split / kind).mkdir(parents=True)
        for p in sorted((source / split / kind).glob("*.png"))[:n]:
            (root / split / kind / p.name).symlink_to(p)
            if kind == "defect":
                mask = source / "ground_truth" / kind / f"{p.stem}_mask.png"
                (root / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                (root / "ground_truth" / kind / mask.name).symlink_to(mask)
    return root


@pytest.fixture(scope="session")
def wide_run(kolektor_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    """RD4AD / EfficientNet-Lite0 at 160x64 (height x width) on real KolektorSDD strips, 2 epochs, exported to FP32
    and INT8 ONNX."""
    from export.onnx import export_onnx
    from train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("wide_run")
    train(TrainConfig(data=str(kolektor_subset), out=str(out), epochs=2, image_size=WIDE_SIZE, batch_size=8, seed=0),
          progress=False)
    fp32 = export_onnx(out, check_images=4)
    int8 = export_onnx(out, precision="int8", check_images=4, calib_images=16)
    return out, fp32, int8


@pytest.fixture(scope="session")
def bottle_images(bottle_subset: Path) -> dict[str, np.ndarray]:
    """A few real bottle images (BGR uint8) keyed by kind."""
    return {
        "good": cv2.imread(str(sorted((bottle_subset / "test" / "good").glob("*.png"))[0])),
        "broken": cv2.imread(str(sorted((bottle_subset / "test" / "broken_large").glob("*.png"))[0])),
    }


VERIFICATION_LINES: list[str] = []
"""Lines tests want in the CI log whatever pytest's verbosity (e.g. what TensorRT-RTX parsed and built)."""


@pytest.fixture
def verification_log():
    """Append a line to the "verification" section printed at the end of the test run."""
    return VERIFICATION_LINES.append


def pytest_terminal_summary(terminalreporter) -> None:
    if VERIFICATION_LINES:
        terminalreporter.section("verification")
        for line in VERIFICATION_LINES:
            terminalreporter.write_line(line)


def require_tool(available: bool, what: str) -> None:
    """Skip without an optional verification tool, but never under CI, which installs it."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{what} must be installed in CI (pip install -e .[dev])", pytrace=False)
        pytest.skip(f"{what} not installed")


ARTIFACTS = Path(os.environ.get("RDEDGE_TEST_ARTIFACTS", REPO / "test-artifacts"))
"""Where browser tests keep their screenshots."""
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium, headless, driven by Playwright (both installed by the test command in CI)."""
    import importlib.util

    require_tool(CHROMIUM is not None, "Debian's chromium (apt-get install chromium)")
    require_tool(importlib.util.find_spec("playwright") is not None, "playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
