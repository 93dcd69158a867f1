"""Camera index and GStreamer pipelines on a real V4L2 driver: boots the VM of ``camera_vm.py`` and runs
``camera_checks.py`` there twice, with the project's OpenCV (PyPI: V4L2, no GStreamer) and with Debian's
``python3-opencv`` (V4L2 and GStreamer), each check in a process of its own, then reads the JUnit reports.

Needs the Debian packages ``qemu-system-x86 busybox-static python3-opencv python3-venv gstreamer1.0-plugins-good``
(``scripts/test.sh`` installs them where it can). Without them these tests skip, saying what is missing, except
under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .camera_vm import VmUnavailable, run_in_vm
from .conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
CHECKS = "tests/camera_checks.py"
# Check -> whether it must pass (True) or be skipped for want of GStreamer (False), per OpenCV build. Each check runs
# in a process of its own, as a line process would start: GStreamer's v4l2 plugin (1.22) leaves a descriptor open on
# the device after each pipeline closed normally, so a camera unplugged after that never returns to the process
# (README, "Cameras, videos and streams"); camera indices avoid it through OpenCV's V4L2 backend, and isolated
# streams (a child process per capture) through the end of the process.
CAMERA_INDEX_CHECKS = {
    "test_camera_index_streams_results": True,
    "test_camera_index_survives_an_unplug": True,
    "test_camera_index_survives_an_unplug_after_an_earlier_stream": True,
    "test_rdedge_predict_on_a_camera_index_writes_video_and_log": True,
}
PIPELINE_CHECKS = (
    "test_usb_pipeline_streams_results",
    "test_usb_pipeline_survives_an_unplug",
    "test_usb_pipeline_restarted_then_unplugged_survives_when_isolated",
    "test_csi_pipeline_text_runs_with_stock_stand_ins_for_nvidia_elements",
    "test_rtsp_pipeline_through_gstreamer_survives_a_camera_restart",
)
EXPECTED = {
    "project": {**CAMERA_INDEX_CHECKS, **dict.fromkeys(PIPELINE_CHECKS, False)},
    "debian-gstreamer": {**CAMERA_INDEX_CHECKS, **dict.fromkeys(PIPELINE_CHECKS, True)},
}


@pytest.fixture(scope="session")
def vm_reports(tiny_onnx: Path, gstreamer_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the checks in the VM once; returns the JUnit outcomes per environment and the checks' records."""
    if shutil.which("qemu-system-x86_64") is None or shutil.which("busybox") is None:
        unavailable("QEMU or busybox missing (apt-get install qemu-system-x86 busybox-static)")
    out = tmp_path_factory.mktemp("vm")
    runs = {"project": Path(sys.executable), "debian-gstreamer": gstreamer_python}
    script = "; ".join(
        f"{python} -m pytest -p no:cacheprovider -q -o faulthandler_timeout=120 -o faulthandler_exit_on_timeout=true "
        f"{CHECKS}::{check} "
        f"--junitxml={out / name}-{check}.xml"
        for name, python in runs.items() for check in EXPECTED[name])
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
           "RDEDGE_TEST_MODEL": str(tiny_onnx), "RDEDGE_VM_OUT": str(out)}
    try:
        run = run_in_vm(["sh", "-c", script], out, cwd=REPO, env=env, timeout_s=1200)
    except VmUnavailable as exc:
        unavailable(str(exc))
    assert run.returncode is not None, "the VM did not finish:\n" + run.explain()
    outcomes = {name: {test: outcome for check in EXPECTED[name]
                       for test, outcome in junit_outcomes(out / f"{name}-{check}.xml", run).items()}
                for name in runs}
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()] \
        if (out / "records.jsonl").is_file() else []
    return {"outcomes": outcomes, "records": records, "run": run}


def junit_outcomes(report: Path, run) -> dict[str, tuple[str, str]]:
    """Test name -> (passed|failed|skipped, message) from a JUnit XML report."""
    assert report.is_file(), f"no report {report.name}:\n" + run.explain()
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        status, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                status = "skipped" if kind == "skipped" else "failed"
                message = (element.get("message") or "") + "\n" + (element.text or "")
        outcomes[case.get("name")] = (status, message)
    return outcomes


@pytest.mark.parametrize("environment", list(EXPECTED))
def test_camera_checks_in_a_vm_with_a_real_v4l2_driver(vm_reports: dict, environment: str, verification_log):
    outcomes = vm_reports["outcomes"][environment]
    for name, must_pass in EXPECTED[environment].items():
        assert name in outcomes, f"{name} did not run in the {environment} environment:\n" + vm_reports["run"].explain()
        status, message = outcomes[name]
        if must_pass:
            assert status == "passed", f"{environment}: {name} {status}:\n{message}"
        else:
            assert status == "skipped" and "without GStreamer" in message, f"{environment}: {name} {status}"
    for entry in vm_reports["records"]:
        if (environment == "project") == ("/usr/bin" not in Path(entry["python"]).resolve().as_posix()):
            details = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("check", "python", "opencv"))
            verification_log(f"VM camera (vivid), OpenCV {entry['opencv']}: {entry['check']}: {details}")
