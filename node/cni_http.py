"""The CNI server's HTTP side: a root-only unix socket, one POST per CNI call
(answered by CniHandler), GET /alive and /ready; CNI errors come back as HTTP
4xx/5xx with {code, msg, details}."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cni.shim import (
    ERR_DECODE,
    ERR_INTERNAL,
    ERR_INVALID_CONFIG,
    ERR_LIMITED_CONNECTIVITY,
    ERR_NOT_AVAILABLE,
    ERR_TRY_AGAIN,
    CniError,
)
from node.cni_request import MAX_REQUEST_BYTES, CniRequest, Timings, parse_request, short
from node.cniserver import CniHandler

log = logging.getLogger(__name__)

# The HTTP status of a CNI error (the shim relays the CNI error either way):
# the spec's codes 1-7 (below 10) mean the caller's request is wrong; try again
# and not available mean come back later; the rest are ours.
_FIRST_NON_CALLER_CODE = 10
_UNAVAILABLE_CODES = (ERR_TRY_AGAIN, ERR_NOT_AVAILABLE, ERR_LIMITED_CONNECTIVITY)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256
    handler: CniHandler


# A too large request is read and dropped up to this much, then the connection closed.
_MAX_DRAINED_BYTES = 64 << 20


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    # A client that stops sending (or never sends the body it announced) loses
    # its connection after this long instead of holding a thread forever.
    timeout = 30.0

    def address_string(self) -> str:
        return "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)

    def _send(self, status: int, body: dict[str, Any] | None, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        why = self.server.handler.not_ready()
        if self.path == "/alive":
            self._send(200, {"alive": True}, {})
        elif self.path == "/ready":
            self._send(503 if why else 200, {"ready": not why, "reason": why}, {})
        else:
            self._send(404, {"error": f"no such path {self.path!r}"}, {})

    def _read_body(self) -> bytes:
        """The request body, at most MAX_REQUEST_BYTES of it in memory; a
        CniError for a bad or too large Content-Length (a too large body is
        read and dropped, up to a bound, so the client reads the answer)."""
        raw = self.headers.get("Content-Length") or "0"
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise CniError(ERR_DECODE, f"bad request to the CNI server: Content-Length "
                           f"{short(raw)} is not a byte count") from None
        if length > MAX_REQUEST_BYTES:
            self.close_connection = True
            left = min(length, _MAX_DRAINED_BYTES)
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
            raise CniError(ERR_INVALID_CONFIG, f"request to the CNI server is {length} bytes, "
                           f"more than {MAX_REQUEST_BYTES}")
        body = self.rfile.read(length)
        if len(body) < length:
            raise CniError(ERR_DECODE, f"bad request to the CNI server: got {len(body)} of "
                           f"{length} bytes")
        return body

    def do_POST(self) -> None:
        timings = Timings()
        req: CniRequest | None = None
        try:
            req = parse_request(self._read_body())
            result = self.server.handler.handle(req, timings)
            self._send(200, result, {"X-CNI-Timings": timings.header()})
        except CniError as e:
            log.warning("%s: CNI error %d: %s", req or "request", e.code, e.msg)
            status = (400 if e.code < _FIRST_NON_CALLER_CODE else
                      503 if e.code in _UNAVAILABLE_CODES else 500)
            self._send(status, e.to_json(req.version if req else "1.1.0"), {})
        except Exception as e:
            log.exception("%s: internal error", req or "request")
            err = CniError(ERR_INTERNAL, f"ovnkube node internal error: {e}")
            self._send(500, err.to_json(req.version if req else "1.1.0"), {})


class CniServer:
    """The HTTP server on the unix socket, served from a thread."""

    def __init__(self, path: Path, handler: CniHandler) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o077)
        try:
            self.server = _Server(str(path), _RequestHandler)
        finally:
            os.umask(old)
        path.chmod(0o600)
        self.server.handler = handler
        self.thread = threading.Thread(target=self.server.serve_forever, name="cni-server",
                                       kwargs={"poll_interval": 0.2}, daemon=True)

    def start(self) -> CniServer:
        self.thread.start()
        log.info("CNI server listening on %s", self.path)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
