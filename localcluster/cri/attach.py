"""Attaching to a running container (`kubectl attach`, `kubectl run -it`).

The shim owns the container's stdin (a pipe, or the terminal's master side)
and its output, so it serves attachments on a unix socket in the container's
run dir; the streaming server connects there for each CRI Attach. Frames both
ways are `<kind:1><length:4><data>`:

    to the shim:   STDIN data, STDIN_EOF, RESIZE (height, width as 2+2 bytes)
    from the shim: STDOUT data, STDERR data
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable

STDIN, STDIN_EOF, RESIZE, STDOUT, STDERR = 0, 1, 2, 3, 4


def frame(kind: int, data: bytes = b"") -> bytes:
    return struct.pack(">BI", kind, len(data)) + data


class FrameReader:
    """Whole frames out of a byte stream that arrives in pieces."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while len(self.buf) >= 5:
            kind, n = struct.unpack(">BI", self.buf[:5])
            if len(self.buf) < 5 + n:
                break
            out.append((kind, self.buf[5:5 + n]))
            self.buf = self.buf[5 + n:]
        return out


class AttachHub:
    """The shim's side: accepts attachments, fans the container's output out
    to each, and feeds their input to the container (stdin_once: the first
    attachment to close its stdin closes the container's)."""

    def __init__(self, path: str, stdin_fd: int, tty_fd: int, stdin_once: bool,
                 on_resize: Callable[[int, int], None]) -> None:
        self.path = path
        self.stdin_fd = stdin_fd  # -1: the container has no stdin
        self.tty_fd = tty_fd
        self.stdin_once = stdin_once
        self.on_resize = on_resize
        self.clients: dict[int, tuple[socket.socket, FrameReader]] = {}
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)

    def accept(self) -> socket.socket:
        conn, _ = self.listener.accept()
        self.clients[conn.fileno()] = (conn, FrameReader())
        return conn

    def drop(self, fd: int) -> None:
        conn, _ = self.clients.pop(fd, (None, None))
        if conn is not None:
            conn.close()

    def from_client(self, fd: int) -> bool:
        """Handle what one attachment sent; False once it went away."""
        conn, reader = self.clients[fd]
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.drop(fd)
            return False
        for kind, payload in reader.feed(data):
            if kind == STDIN and self.stdin_fd >= 0:
                with contextlib.suppress(OSError):
                    os.write(self.stdin_fd, payload)
            elif kind == STDIN_EOF and self.stdin_fd >= 0 and self.stdin_once:
                if self.tty_fd >= 0:
                    with contextlib.suppress(OSError):
                        os.write(self.stdin_fd, b"\x04")
                else:
                    os.close(self.stdin_fd)
                    self.stdin_fd = -1
            elif kind == RESIZE and len(payload) == 4:
                h, w = struct.unpack(">HH", payload)
                self.on_resize(h, w)
        return True

    def output(self, stream: str, data: bytes) -> None:
        f = frame(STDOUT if stream == "stdout" else STDERR, data)
        for fd, (conn, _) in list(self.clients.items()):
            try:
                conn.sendall(f)
            except OSError:
                self.drop(fd)

    def close(self) -> None:
        for fd in list(self.clients):
            self.drop(fd)
        self.listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
