"""Checks with a real GStreamer: run by ``test_gstreamer.py`` with Debian's Python and its OpenCV 4.6 (built with
GStreamer 1.22), since the project's PyPI OpenCV has no GStreamer. Not collected on its own (the name does not
start with ``test_``).

OpenCV opens a GStreamer pipeline by starting it and waiting, without limit, until it has started. A ``filesrc`` on
a FIFO that no program writes to makes that wait certain (the pipeline blocks opening the FIFO), where the case
met in practice, ``rtspsrc`` after a refused connection, blocks only now and then.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

import pytest

from sdk import SourceOpenTimeout
from sdk.reader import FrameReader
from sdk.sources import blocked_opens, open_capture, opencv_has_gstreamer

from .conftest import wait_until

pytestmark = pytest.mark.skipif(not opencv_has_gstreamer(), reason="this OpenCV is built without GStreamer")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "camera.fifo"
    os.mkfifo(path)
    return path


def pipeline(fifo: Path) -> str:
    return (f"filesrc location={fifo} ! jpegdec ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1 sync=false")


def unblock(fifo: Path) -> None:
    """Open the FIFO for writing and close it: the pipeline's open of it returns (and it reads an empty file)."""
    os.close(os.open(fifo, os.O_WRONLY))


def test_opening_a_pipeline_that_blocks_is_given_up_in_time(fifo: Path):
    started = time.monotonic()
    with pytest.raises(SourceOpenTimeout, match="did not finish within 1 s"):
        open_capture(pipeline(fifo), pipeline_timeout_s=1.0)
    assert time.monotonic() - started < 5.0
    assert len(blocked_opens()) == 1
    unblock(fifo)  # OpenCV's open returns at last; the helper releases what it opened
    assert wait_until(lambda: not blocked_opens(), 10.0), blocked_opens()


def test_without_a_limit_the_same_opening_blocks_until_the_pipeline_starts(fifo: Path):
    """What the limit is for: OpenCV itself does not return while the pipeline cannot start."""
    returned = threading.Event()
    opener = threading.Thread(target=lambda: (open_capture(pipeline(fifo), pipeline_timeout_s=None).release(),
                                              returned.set()), daemon=True)
    opener.start()
    assert not returned.wait(3.0)
    unblock(fifo)
    assert returned.wait(10.0)


def test_a_stream_reader_on_a_pipeline_that_blocks_raises_source_open_timeout(fifo: Path):
    reader = FrameReader(pipeline(fifo), mode="latest", live=True,
                         opener=functools.partial(open_capture, pipeline_timeout_s=1.0))
    with pytest.raises(SourceOpenTimeout, match=r"cannot open video source 'filesrc .*' did not finish within 1 s"):
        reader.start()
    unblock(fifo)
    assert wait_until(lambda: not blocked_opens(), 10.0), blocked_opens()
