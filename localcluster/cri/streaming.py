"""The runtime's streaming server: exec, attach and port-forward, as the
kubelet proxies them (CRI Exec/Attach/PortForward return a one-time URL here).

The apiserver speaks SPDY/3.1 through the kubelet's proxy. Exec uses the
remotecommand protocols (`v4.channel.k8s.io` down to `channel.k8s.io`):
streams named error, stdin, stdout, stderr and resize; the v4 exit status is
a metav1.Status on the error stream. Port-forward (`portforward.k8s.io`) opens
an error and a data stream per connection, paired by `requestid`; each
connection dials the port on the pod's loopback, inside its namespace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pty
import secrets
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from localcluster.cri import attach
from localcluster.cri.spdy import Session, Stream
from localcluster.netns import netns_socket

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io")
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TOKEN_TTL = 60.0  # a URL handed to the kubelet is good once, for this long
STREAM_WAIT = 30.0  # how long the client has to open the streams it announced


@dataclasses.dataclass
class ExecTarget:
    """What to run for one exec: argv, env and cwd as the runtime resolved them."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool
    error: str = ""  # the command cannot start: this is reported instead


@dataclasses.dataclass
class AttachTarget:
    """A running container's shim socket (localcluster/cri/attach.py)."""

    socket: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclasses.dataclass
class ForwardTarget:
    sandbox_id: str
    netns: str | None  # None: the runtime's own (host-network pods)


def _status(code: int, argv: list[str]) -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps({
        "metadata": {}, "status": "Failure",
        "message": (f"command terminated with non-zero exit code: error executing "
                    f"command {argv}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


class _Streams:
    """The streams of one connection, gathered as the reader thread sees them."""

    def __init__(self) -> None:
        self.cv = threading.Condition()
        self.by_type: dict[str, Stream] = {}
        self.pending: list[Stream] = []

    def add(self, s: Stream) -> None:
        with self.cv:
            self.by_type[s.type] = s
            self.pending.append(s)
            self.cv.notify_all()

    def wait_for(self, types: set[str], timeout: float) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: types <= set(self.by_type), timeout)


def terminal_sizes(stream: Stream) -> Iterator[tuple[int, int]]:
    """(height, width) of each resize message: JSON objects, back to back,
    split anywhere across the stream's chunks."""
    dec = json.JSONDecoder()
    buf = ""
    while chunk := stream.read():
        buf += chunk.decode(errors="replace")
        while buf.strip():
            try:
                size, end = dec.raw_decode(buf.lstrip())
            except ValueError:
                break  # incomplete: wait for the rest
            buf = buf.lstrip()[end:]
            yield int(size.get("Height", 0)), int(size.get("Width", 0))


def _pump_to_stream(read: Callable[[], bytes], stream: Stream) -> None:
    with contextlib.suppress(OSError):
        while chunk := read():
            stream.write(chunk)


class StreamingServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._tokens: dict[str, tuple[float, str, Any]] = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("streaming: " + format, *args)

            def do_GET(self) -> None:
                outer._handle(self)

            do_POST = do_GET

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.address = f"{host}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="streaming",
                                        daemon=True)

    def start(self) -> StreamingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _register(self, kind: str, target: Any) -> str:
        token = secrets.token_urlsafe(12)
        now = time.monotonic()
        with self._lock:
            self._tokens = {k: v for k, v in self._tokens.items() if v[0] > now}
            self._tokens[token] = (now + TOKEN_TTL, kind, target)
        return f"http://{self.address}/{kind}/{token}"

    def exec_url(self, target: ExecTarget) -> str:
        return self._register("exec", target)

    def attach_url(self, target: AttachTarget) -> str:
        return self._register("attach", target)

    def portforward_url(self, target: ForwardTarget) -> str:
        return self._register("portforward", target)

    # --- one request ---------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        parts = h.path.split("?", 1)[0].strip("/").split("/")
        with self._lock:
            entry = self._tokens.pop(parts[1], None) if len(parts) == 2 else None
        if entry is None or entry[1] != parts[0] or entry[0] < time.monotonic():
            h.send_error(404, "unknown or expired streaming session")
            return
        _, kind, target = entry
        offered = [p.strip() for v in h.headers.get_all("X-Stream-Protocol-Version") or []
                   for p in v.split(",")]
        supported = (PORTFORWARD_PROTOCOL,) if kind == "portforward" else EXEC_PROTOCOLS
        proto = next((p for p in supported if p in offered), None)
        if "spdy/3.1" not in (h.headers.get("Upgrade") or "").lower() or (
                offered and proto is None):
            h.send_error(400, f"need Upgrade: SPDY/3.1 and one of {', '.join(supported)} "
                         f"(offered: {', '.join(offered) or 'none'})")
            return
        proto = proto or supported[-1]
        h.send_response_only(101)
        h.send_header("Connection", "Upgrade")
        h.send_header("Upgrade", "SPDY/3.1")
        h.send_header("X-Stream-Protocol-Version", proto)
        h.end_headers()
        h.wfile.flush()
        h.close_connection = True
        streams = _Streams()
        session = Session(h.rfile, h.wfile, streams.add)  # type: ignore[arg-type]
        reader = threading.Thread(target=session.serve, name="spdy-read", daemon=True)
        reader.start()
        try:
            if kind == "exec":
                self._exec(session, streams, target, proto)
            elif kind == "attach":
                self._attach(streams, target, proto)
            else:
                self._portforward(session, streams, target)
        except Exception:
            log.exception("streaming %s session failed", kind)
        finally:
            session.goaway()
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            reader.join(5)

    # --- exec ----------------------------------------------------------------
    @staticmethod
    def _wanted(t: ExecTarget | AttachTarget, proto: str) -> set[str]:
        want = {"error"}
        if t.stdin:
            want.add("stdin")
        if t.stdout:
            want.add("stdout")
        if t.stderr and not t.tty:
            want.add("stderr")
        if t.tty and proto in ("v4.channel.k8s.io", "v3.channel.k8s.io"):
            want.add("resize")
        return want

    def _exec(self, session: Session, streams: _Streams, t: ExecTarget, proto: str) -> None:
        want = self._wanted(t, proto)
        if not streams.wait_for(want, STREAM_WAIT):
            log.warning("exec: client opened %s, expected %s", sorted(streams.by_type),
                        sorted(want))
            return
        s = streams.by_type
        err = s["error"]
        if t.error:
            err.write(json.dumps({"metadata": {}, "status": "Failure", "message": t.error,
                                  "reason": "InternalError", "code": 500}).encode()
                      if proto == "v4.channel.k8s.io" else t.error.encode())
            err.close()
            return
        try:
            code = self._run(t, s)
        except OSError as e:
            err.write(f"failed to exec in container: {e}".encode())
            err.close()
            return
        for name in ("stdout", "stderr"):
            if name in s:
                s[name].close()
        if proto == "v4.channel.k8s.io":
            err.write(_status(code, t.argv))
        elif code != 0:
            err.write(f"command terminated with non-zero exit code: {code}".encode())
        err.close()

    def _run(self, t: ExecTarget, s: dict[str, Stream]) -> int:
        master = slave = -1
        if t.tty:
            master, slave = pty.openpty()
            p = subprocess.Popen(t.argv, stdin=slave, stdout=slave, stderr=slave, env=t.env,
                                 cwd=t.cwd, start_new_session=True,
                                 preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
            os.close(slave)
        else:
            p = subprocess.Popen(t.argv, env=t.env, cwd=t.cwd, start_new_session=True,
                                 stdin=subprocess.PIPE if t.stdin else subprocess.DEVNULL,
                                 stdout=subprocess.PIPE if t.stdout else subprocess.DEVNULL,
                                 stderr=subprocess.PIPE if t.stderr else subprocess.DEVNULL)
        pumps: list[threading.Thread] = []

        def start(fn: Callable[..., None], *args: Any) -> None:
            th = threading.Thread(target=fn, args=args, daemon=True)
            th.start()
            pumps.append(th)

        if t.tty:
            def read_pty() -> bytes:
                try:
                    return os.read(master, 65536)
                except OSError:  # EIO once the last slave holder is gone
                    return b""
            if "stdout" in s:
                start(_pump_to_stream, read_pty, s["stdout"])
            if "resize" in s:
                threading.Thread(target=self._resize, args=(s["resize"], master),
                                 daemon=True).start()
        else:
            for name, pipe in (("stdout", p.stdout), ("stderr", p.stderr)):
                if pipe is not None and name in s:
                    start(_pump_to_stream, lambda f=pipe: f.read1(65536), s[name])
        if "stdin" in s:
            threading.Thread(target=self._stdin, args=(s["stdin"], p, master),
                             daemon=True).start()
        code = p.wait()
        for th in pumps:
            th.join(10)
        if master >= 0:
            os.close(master)
        return code if code >= 0 else 128 - code

    @staticmethod
    def _stdin(stream: Stream, p: subprocess.Popen[bytes], master: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read():
                if master >= 0:
                    os.write(master, chunk)
                elif p.stdin is not None:
                    p.stdin.write(chunk)
                    p.stdin.flush()
            if master >= 0:
                os.write(master, b"\x04")  # EOF on a terminal is ^D
            elif p.stdin is not None:
                p.stdin.close()

    @staticmethod
    def _resize(stream: Stream, master: int) -> None:
        for height, width in terminal_sizes(stream):
            with contextlib.suppress(OSError):
                fcntl.ioctl(master, termios.TIOCSWINSZ,
                            struct.pack("HHHH", height, width, 0, 0))

    # --- attach --------------------------------------------------------------
    def _attach(self, streams: _Streams, t: AttachTarget, proto: str) -> None:
        want = self._wanted(t, proto)
        if not streams.wait_for(want, STREAM_WAIT):
            return
        s = streams.by_type
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(t.socket)
        except OSError as e:
            conn.close()
            s["error"].write(f"failed to attach to the container: {e}".encode())
            s["error"].close()
            return
        send_lock = threading.Lock()

        def send(kind: int, data: bytes = b"") -> None:
            with send_lock, contextlib.suppress(OSError):
                conn.sendall(attach.frame(kind, data))

        def stdin() -> None:
            while chunk := s["stdin"].read():
                send(attach.STDIN, chunk)
            send(attach.STDIN_EOF)

        def resize() -> None:
            for height, width in terminal_sizes(s["resize"]):
                send(attach.RESIZE, struct.pack(">HH", height, width))
        for name, fn in (("stdin", stdin), ("resize", resize)):
            if name in s:
                threading.Thread(target=fn, daemon=True).start()
        reader = attach.FrameReader()
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                for kind, payload in reader.feed(data):
                    name = "stdout" if kind == attach.STDOUT or t.tty else "stderr"
                    if name in s:
                        s[name].write(payload)
        conn.close()
        for name in ("stdout", "stderr"):
            if name in s:
                s[name].close()
        if proto == "v4.channel.k8s.io":
            s["error"].write(json.dumps({"metadata": {}, "status": "Success"}).encode())
        s["error"].close()

    # --- port-forward --------------------------------------------------------
    def _portforward(self, session: Session, streams: _Streams, t: ForwardTarget) -> None:
        pairs: dict[str, dict[str, Stream]] = {}
        while not session.closed.is_set():
            with streams.cv:
                streams.cv.wait_for(lambda: streams.pending or session.closed.is_set(), 1.0)
                new, streams.pending = streams.pending, []
            for st in new:
                rid = st.header("requestid")
                pair = pairs.setdefault(rid, {})
                pair[st.type] = st
                if "data" in pair and "error" in pair:
                    del pairs[rid]
                    threading.Thread(target=self._forward, args=(t, pair), daemon=True,
                                     name=f"portforward-{rid}").start()

    @staticmethod
    def _forward(t: ForwardTarget, pair: dict[str, Stream]) -> None:
        data, err = pair["data"], pair["error"]
        port_s = data.header("port")
        try:
            port = int(port_s)
            sock = netns_socket(t.netns, socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(10)
            try:
                sock.connect(("127.0.0.1", port))
            except OSError:
                sock.close()
                raise
        except (ValueError, OSError) as e:
            err.write(f"error forwarding port {port_s} to pod {t.sandbox_id}: "
                      f"dial tcp4 127.0.0.1:{port_s}: {e}".encode())
            err.close()
            data.close()
            return
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def upstream() -> None:
            with contextlib.suppress(OSError):
                while chunk := data.read():
                    sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)

        up = threading.Thread(target=upstream, daemon=True)
        up.start()
        _pump_to_stream(lambda: sock.recv(65536), data)
        data.close()
        up.join(30)
        sock.close()
        err.close()
