"""A video capture that runs in a child process, so that whatever the capture stack leaks ends with that process.

Some capture stacks keep resources after a capture is released: GStreamer's v4l2 plugin (1.22, measured in
``tests/camera_vm.py``) leaves a descriptor open on the camera after every ``v4l2src`` pipeline closed normally, so
a camera unplugged later never comes back to the process; a capture blocked inside a driver cannot be interrupted
at all. :class:`ProcessCapture` opens the source in a child Python process (``python -m sdk.capture_process``)
and receives its frames over a pipe. Releasing it ends the child, and the kernel closes everything the child held;
a child that stops sending frames for ``read_timeout_s`` counts as a failed read, so the stream reconnects.

``Detector.stream(source, isolate=True)`` (``rdedge predict --isolate``) uses it for every source. The price: a
process per source (started again at each reconnection) and one copy of each frame through the pipe.

Wire format, child to parent: a header (:data:`HEADER`: magic, dtype character, then height, width and channels,
channels 0 for a two-dimensional frame), then the frame's bytes. The first header after the source opened is
:data:`OPENED` with no payload; a child that cannot open its source exits without writing anything.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADER = struct.Struct("<4scIII")
OPENED = b"OPEN"
FRAME = b"FRME"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ProcessCapture:
    """The ``Capture`` of :mod:`sdk.sources` (``isOpened``/``read``/``release``), read from a child process.

    Args:
        source: Camera index, file, URL or GStreamer pipeline, opened in the child with
            :func:`sdk.sources.open_capture`.
        open_timeout_s: How long the child may take to start and open the source.
        read_timeout_s: How long a read may wait for the next frame before it counts as failed.
        python: The interpreter of the child (default: this one, so it has the same OpenCV).
    """

    _process: subprocess.Popen[bytes] | None = None
    _opened = False

    def __init__(self, source: int | str | os.PathLike[str], *, open_timeout_s: float = 30.0,
                 read_timeout_s: float = 5.0, python: str | None = None) -> None:
        self.read_timeout_s = read_timeout_s
        argument = source if isinstance(source, int) else os.fspath(source)
        package_root = str(Path(__file__).resolve().parents[1])  # the child imports this very sdk
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (package_root, os.environ.get("PYTHONPATH"))))}
        self._process = subprocess.Popen(
            [python or sys.executable, "-m", "sdk.capture_process", json.dumps(argument)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0, env=env)
        header = self._read_header(open_timeout_s)
        self._opened = header is not None and header[0] == OPENED
        if not self._opened:
            self.release()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def isOpened(self) -> bool:  # OpenCV's name
        """Whether the child opened the source and has not been released."""
        return self._opened and self._process is not None

    def read(self) -> tuple[bool, np.ndarray | None]:
        """The next frame, or ``(False, None)`` when the child ended, failed or sent nothing in time.

        After a failed read the capture stays failed (a frame may have been cut off in the pipe): release it and
        open a new one, as the stream's reconnection does.
        """
        if not self.isOpened():
            return False, None
        header = self._read_header(self.read_timeout_s)
        frame = None
        if header is not None and header[0] == FRAME:
            _, dtype, height, width, channels = header
            frame = np.empty((height, width, channels) if channels else (height, width), dtype=dtype.decode())
            if not self._read_into(memoryview(frame).cast("B"), self.read_timeout_s):
                frame = None
        if frame is None:
            self._opened = False
            return False, None
        return True, frame

    def release(self) -> None:
        """End the child (terminate, then kill) and close the pipe. Safe to call more than once."""
        process, self._process = self._process, None
        self._opened = False
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(3.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __del__(self) -> None:
        self.release()

    def _read_header(self, timeout_s: float) -> tuple | None:
        buffer = bytearray(HEADER.size)
        return HEADER.unpack(buffer) if self._read_into(memoryview(buffer), timeout_s) else None

    def _read_into(self, view: memoryview, timeout_s: float) -> bool:
        """Fill ``view`` from the pipe; False on end of stream or when ``timeout_s`` passes."""
        assert self._process is not None and self._process.stdout is not None
        pipe = self._process.stdout
        deadline = time.monotonic() + timeout_s
        filled = 0
        while filled < len(view):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                return False
            n = pipe.readinto(view[filled:])
            if not n:
                return False
            filled += n
        return True


def capture_processes(parent: int | None = None) -> list[int]:
    """Process ids of the capture children of ``parent`` (default: this process) that are running (Linux ``/proc``;
    elsewhere an empty list)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if b"sdk.capture_process" not in (status.parent / "cmdline").read_bytes():
                continue
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(parent) and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(status.parent.name))
    return sorted(found)


def _die_with_parent() -> None:
    """Ask Linux to end this process when its parent dies (no orphan keeps the camera)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """The child: open the source named by the JSON argument and write its frames to stdout until it fails."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python -m sdk.capture_process SOURCE_AS_JSON\n\nThe child side of "
              "sdk.capture_process.ProcessCapture: opens the source (a JSON int or string) and writes its frames "
              "to stdout.", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    _die_with_parent()  # SIGTERM keeps its default action: it ends the process even inside a blocking read
    from .sources import open_capture

    capture = open_capture(json.loads(argv[0]), pipeline_timeout_s=None)  # the parent's open_timeout_s applies
    if not capture.isOpened():
        return 1
    out = sys.stdout.buffer
    try:
        out.write(HEADER.pack(OPENED, b"B", 0, 0, 0))
        out.flush()
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                return 1
            frame = np.ascontiguousarray(frame)
            channels = frame.shape[2] if frame.ndim == 3 else 0
            out.write(HEADER.pack(FRAME, frame.dtype.char.encode(), frame.shape[0], frame.shape[1], channels))
            out.write(memoryview(frame).cast("B"))
            out.flush()
    except BrokenPipeError:  # the parent released us
        os._exit(0)
    finally:
        capture.release()


if __name__ == "__main__":
    sys.exit(main())
