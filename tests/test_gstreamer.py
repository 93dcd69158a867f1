"""Runs ``gstreamer_checks.py`` with Debian's Python, whose OpenCV has GStreamer (the project's PyPI OpenCV has
not): opening a GStreamer pipeline that cannot start is given up in time. Needs ``python3-opencv`` and
``python3-venv`` (``scripts/system_packages.sh``); skips without them, except under CI, where it fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .conftest import REPO


def test_gstreamer_checks_with_debians_opencv(gstreamer_python: Path):
    done = subprocess.run([str(gstreamer_python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                           "-o", "faulthandler_timeout=60", "-o", "faulthandler_exit_on_timeout=true",
                           "tests/gstreamer_checks.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "3 passed" in output and "skipped" not in output, output
