"""A minimal RTSP camera for tests: Motion-JPEG over RTP (RFC 2435), interleaved on the RTSP TCP connection.

Just enough of RTSP 1.0 (OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN) for FFmpeg's RTSP client, which OpenCV uses for
``rtsp://`` URLs, so that the SDK's RTSP path runs against a real protocol exchange on 127.0.0.1. UDP transport is
declined (461), as many cameras behind firewalls do; FFmpeg then falls back to TCP. The server can be killed and
restarted on the same port, like a camera rebooting.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time

import cv2
import numpy as np

MAX_PAYLOAD = 1400


def jpeg_parts(jpeg: bytes) -> tuple[list[bytes], int, int, bytes]:
    """Split a baseline JPEG (OpenCV's encoder: standard Huffman tables, 4:2:0) into what RFC 2435 sends.

    Returns:
        The quantization tables (64 bytes each, in order), width, height and the entropy-coded scan data.
    """
    tables: list[bytes] = []
    width = height = 0
    i = 2
    while i < len(jpeg):
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2 : i + 4])[0]
        segment = jpeg[i + 4 : i + 2 + length]
        if marker == 0xDB:  # DQT: one or more 8-bit tables
            k = 0
            while k < len(segment):
                tables.append(segment[k + 1 : k + 65])
                k += 65
        elif marker == 0xC0:  # SOF0
            height, width = struct.unpack(">HH", segment[1:5])
        elif marker == 0xDA:  # SOS: the scan runs to the EOI marker
            return tables, width, height, jpeg[i + 2 + length : jpeg.rindex(b"\xff\xd9")]
        i += 2 + length
    raise ValueError("no scan in JPEG")


def rtp_packets(jpeg: bytes, sequence: int, timestamp: int, ssrc: int = 0x5EED) -> list[bytes]:
    """RTP/JPEG packets (payload type 26, type 1 = 4:2:0, Q 255 = tables in-band) for one frame."""
    tables, width, height, scan = jpeg_parts(jpeg)
    qtable = struct.pack(">BBH", 0, 0, 64 * len(tables)) + b"".join(tables)
    packets = []
    offset = 0
    while offset < len(scan):
        first = offset == 0
        room = MAX_PAYLOAD - (len(qtable) if first else 0)
        chunk = scan[offset : offset + room]
        last = offset + len(chunk) >= len(scan)
        header = struct.pack(">BBHII", 0x80, (0x80 if last else 0) | 26, sequence & 0xFFFF, timestamp, ssrc)
        jpeg_header = struct.pack(">I", offset)[1:]  # type-specific 0, then 24-bit fragment offset
        jpeg_header = b"\x00" + jpeg_header + struct.pack(">BBBB", 1, 255, width // 8, height // 8)
        packets.append(header + jpeg_header + (qtable if first else b"") + chunk)
        offset += len(chunk)
        sequence += 1
    return packets


class RtspServer:
    """Serves ``frames`` in a loop at ``fps`` to each client at ``rtsp://127.0.0.1:PORT/camera``."""

    def __init__(self, frames: list[np.ndarray], port: int = 0, fps: float = 30.0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for f in frames]
        self.fps = fps
        self.port = port
        self.server: socketserver.ThreadingTCPServer | None = None
        self.stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/camera"

    def start(self) -> None:
        outer = self
        self.stopping.clear()

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    while not outer.stopping.is_set():
                        request = self._read_request()
                        if request is None:
                            return
                        method, headers = request
                        if method == "PLAY":
                            self._reply(headers, extra="Range: npt=0.000-\r\n")
                            outer._stream(self.connection)
                            return
                        self._answer(method, headers)
                except (ConnectionError, OSError):
                    pass

            def _read_request(self) -> tuple[str, dict[str, str]] | None:
                line = self.rfile.readline().decode(errors="replace").strip()
                if not line:
                    return None
                headers = {}
                while True:
                    h = self.rfile.readline().decode(errors="replace").strip()
                    if not h:
                        break
                    key, _, value = h.partition(":")
                    headers[key.strip().lower()] = value.strip()
                return line.split()[0], headers

            def _reply(self, headers: dict[str, str], status: str = "200 OK", extra: str = "",
                       body: bytes = b"") -> None:
                text = (f"RTSP/1.0 {status}\r\nCSeq: {headers.get('cseq', '0')}\r\nSession: 1\r\n{extra}"
                        f"Content-Length: {len(body)}\r\n\r\n")
                self.wfile.write(text.encode() + body)

            def _answer(self, method: str, headers: dict[str, str]) -> None:
                if method == "OPTIONS":
                    self._reply(headers, extra="Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN\r\n")
                elif method == "DESCRIBE":
                    sdp = (b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=rdedge test camera\r\nc=IN IP4 0.0.0.0\r\n"
                           b"t=0 0\r\nm=video 0 RTP/AVP 26\r\na=control:track0\r\n")
                    self._reply(headers, extra="Content-Type: application/sdp\r\n", body=sdp)
                elif method == "SETUP":
                    transport = headers.get("transport", "")
                    if "TCP" not in transport.upper():
                        self._reply(headers, status="461 Unsupported Transport")
                    else:
                        self._reply(headers, extra="Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n")
                else:
                    self._reply(headers)

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True  # restart on the port while the killed connections sit in TIME_WAIT
            daemon_threads = True

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _stream(self, connection: socket.socket) -> None:
        sequence, i, start = 0, 0, time.monotonic()
        while not self.stopping.is_set():
            packets = rtp_packets(self.jpegs[i % len(self.jpegs)], sequence, int(i * 90000 / self.fps))
            sequence += len(packets)
            connection.sendall(b"".join(b"$\x00" + struct.pack(">H", len(p)) + p for p in packets))
            i += 1
            time.sleep(max(0.0, start + i / self.fps - time.monotonic()))

    def kill(self) -> None:
        """Stop serving and drop every connection (the camera goes away)."""
        assert self.server is not None
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.server = None
