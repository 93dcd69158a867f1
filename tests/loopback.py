"""A real local network camera for tests: MJPEG over HTTP on 127.0.0.1 that can be killed and restarted."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


class MjpegServer:
    """A real MJPEG-over-HTTP camera on 127.0.0.1 that can be killed and restarted on the same port."""

    def __init__(self, frames: list[np.ndarray], port: int = 0, fps: float = 50.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.fps = fps
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.paused = False  # True: keep the connection open and send nothing (a camera that hangs)

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not getattr(self.server, "stopping", False):
                        if outer.paused:
                            time.sleep(0.02)
                            continue
                        jpeg = outer.jpegs[i % len(outer.jpegs)]
                        i += 1
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        time.sleep(1.0 / outer.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/camera.mjpg"

    def kill(self) -> None:
        assert self.server is not None
        self.server.stopping = True
        self.server.shutdown()
        self.server.server_close()
        self.server = None
