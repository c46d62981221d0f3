"""A real ``iplap serve`` on a loopback port, and small clients for it."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

REFS = 2  # few references keep renders short; N is the same code path at any size


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    avatar_dir: Path
    token: str | None = None
    log: "deque | None" = None  # the last lines the server wrote to stderr

    def log_tail(self, lines: int = 40) -> str:
        return "".join(list(self.log or ())[-lines:])

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.split("//")[1].rstrip("/").rsplit(":", 1)
        return host, int(port)

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_server(bundle: Path, avatar_dir: Path, *extra: str, token: str | None = None) -> Server:
    args = [sys.executable, "-m", "iplap", "serve", "--bundle", str(bundle), "--port", "0", "--refs", str(REFS),
            "--avatar-dir", str(avatar_dir), *extra]
    if token:
        args += ["--token", token]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 180
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"iplap serve: (http://\S+)", line)
        if found:
            # Keep draining stderr so the server never blocks on a full pipe.
            import threading

            log = deque(lines, maxlen=400)
            threading.Thread(target=lambda: [log.append(line) for line in process.stderr], daemon=True).start()
            return Server(found.group(1), process, avatar_dir, token, log)
    process.kill()
    raise RuntimeError("iplap serve did not start:\n" + "".join(lines))


# -- a WebSocket client that reads only when told to (for the slow-client test) --------------------

class RawWebSocket:
    """A minimal RFC 6455 client on a plain socket with a tiny receive buffer: it sends, and it
    reads only when asked, so the server meets a client that does not keep up."""

    def __init__(self, host: str, port: int, path: str, receive_buffer: int = 4096):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(head.decode(errors="replace"))

    def send(self, payload: bytes | str) -> None:
        opcode = 1 if isinstance(payload, str) else 2
        data = payload.encode() if isinstance(payload, str) else payload
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([0x80 | len(data)])
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next message (frames unfragmented, as aiohttp sends them)."""
        first, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def receive_all(self) -> list[tuple[int, bytes]]:
        messages = []
        while True:
            try:
                opcode, data = self.receive()
            except (ConnectionError, OSError):
                return messages
            if opcode == 8:  # close
                return messages
            messages.append((opcode, data))

    def close(self) -> None:
        self.sock.close()


def parse_frame(data: bytes) -> tuple[dict, bytes, bytes]:
    """A binary live message -> (header, jpeg, audio)."""
    (length,) = struct.unpack(">I", data[:4])
    header = json.loads(data[4:4 + length])
    jpeg = data[4 + length:4 + length + header["jpeg"]]
    audio = data[4 + length + header["jpeg"]:4 + length + header["jpeg"] + header["audio"]]
    return header, jpeg, audio
