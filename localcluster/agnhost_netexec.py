"""agnhost's netexec: the HTTP, UDP and SCTP servers network tests probe
(`/hostname`, `/dial`, `/shell`, `/clientip`, `/exit`, ...), with upstream's
answers, and the helpers the other subcommands share (the hostname, Go
durations, binding). The command line is localcluster/agnhost.py.
"""


from __future__ import annotations

import contextlib
import datetime
import http.client
import http.server
import json
import logging
import os
import re
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("agnhost")
T = TypeVar("T")

SHELL = "/bin/sh"
DIAL_TIMEOUT = 5.0
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def hostname() -> str:
    return socket.gethostname()


def parse_duration(text: str) -> float:
    """A Go duration ("1.5s", "300ms", "1m30s", "0") in seconds."""
    s = text.strip()
    if s in ("0", ""):
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    total, pos = 0.0, 0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _client_addr(addr: Any) -> str:
    """ip:port of a peer the way Go prints it (IPv4-mapped IPv6 as plain IPv4)."""
    host, port = str(addr[0]), int(addr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    return _host_port(host, port)


def bind_any(sock_type: int, port: int, proto: int = 0) -> socket.socket:
    """Listen on every address, dual-stack where IPv6 works (like Go's ":port")."""
    try:
        s = socket.socket(socket.AF_INET6, sock_type, proto)
        try:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            return s
        except OSError:
            s.close()
            raise
    except OSError:
        s = socket.socket(socket.AF_INET, sock_type, proto)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        return s


def flush_logs() -> None:
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            h.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()


# --- netexec -----------------------------------------------------------------

class NetexecState:
    def __init__(self) -> None:
        self.server_ready = threading.Event()  # the UDP (or SCTP) server is up
        self.sigterm = threading.Event()
        self.exit_code: int | None = None
        self.exit_requested = threading.Event()


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, handler: type[http.server.BaseHTTPRequestHandler],
                 state: NetexecState, override: str, tls: ssl.SSLContext | None) -> None:
        self.state = state
        self.override = override
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], handler, bind_and_activate=False)
        self.socket.close()
        self.socket = tls.wrap_socket(sock, server_side=True) if tls else sock
        self.server_address = sock.getsockname()
        self.socket.listen(128)


class NetexecHandler(http.server.BaseHTTPRequestHandler):
    server: ThreadingServer
    protocol_version = "HTTP/1.1"
    server_version = "agnhost"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _reply(self, code: int, body: str | bytes, ctype: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, code: int, msg: str) -> None:  # like Go's http.Error
        self._reply(code, msg + "\n", headers={"X-Content-Type-Options": "nosniff"})

    def _parsed(self, arg: Callable[[str], str], name: str, parse: Callable[[str], T],
                default: T, expected: str) -> T | None:
        """Query argument `name` parsed, or `default` when empty. When it does not
        parse, answers 200 with upstream's message and returns None."""
        text = arg(name)
        if not text:
            return default
        try:
            return parse(text)
        except ValueError:
            self._reply(200, f"argument {name!r} must be {expected} or empty, got {text!r}\n")
            return None

    def do_GET(self) -> None:
        target = self.server.override or self.path
        url = urllib.parse.urlsplit(target)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        if self.command in ("POST", "PUT") and not self.server.override:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/x-www-form-urlencoded"):
                for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items():
                    query.setdefault(k, v)

        def arg(name: str) -> str:
            return query.get(name, [""])[0]

        routes: dict[str, Callable[[Callable[[str], str]], None]] = {
            "/clientip": self._clientip, "/header": self._header, "/dial": self._dial,
            "/echo": self._echo, "/exit": self._exit, "/healthz": self._healthz,
            "/readyz": self._readyz, "/hostname": self._hostname, "/hostName": self._hostname,
            "/redirect": self._redirect, "/shell": self._shell, "/upload": self._upload,
            "/shutdown": self._shutdown,
        }
        routes.get(url.path, self._root)(arg)

    do_POST = do_GET
    do_PUT = do_GET
    do_HEAD = do_GET
    do_DELETE = do_GET

    def _root(self, arg: Callable[[str], str]) -> None:
        now = datetime.datetime.now().astimezone()
        self._reply(200, f"NOW: {now.strftime('%Y-%m-%d %H:%M:%S.%f %z %Z')}")

    def _hostname(self, arg: Callable[[str], str]) -> None:
        self._reply(200, hostname())

    def _clientip(self, arg: Callable[[str], str]) -> None:
        self._reply(200, _client_addr(self.client_address))

    def _header(self, arg: Callable[[str], str]) -> None:
        key = arg("key")
        if key:
            self._reply(200, self.headers.get(key, ""))
            return
        hdrs: dict[str, list[str]] = {}
        for k, v in self.headers.items():
            hdrs.setdefault(k.title(), []).append(v)
        self._reply(200, json.dumps(hdrs))

    def _echo(self, arg: Callable[[str], str]) -> None:
        status = self._parsed(arg, "code", int, 200, "an integer")
        if status is not None:
            self._reply(status, arg("msg"))

    def _healthz(self, arg: Callable[[str], str]) -> None:
        self._reply(200 if self.server.state.server_ready.is_set() else 412, "")

    def _readyz(self, arg: Callable[[str], str]) -> None:
        if self.server.state.sigterm.is_set():
            self._reply(503, "shutting down")
        elif self.server.state.server_ready.is_set():
            self._reply(200, "ok")
        else:
            self._reply(412, "")

    def _redirect(self, arg: Callable[[str], str]) -> None:
        location = arg("location")
        status = self._parsed(arg, "code", int, 302, "an integer")
        if status is None:
            return
        self._reply(status, f'<a href="{location}">Found</a>.\n\n',
                    ctype="text/html; charset=utf-8", headers={"Location": location})

    def _exit(self, arg: Callable[[str], str]) -> None:
        timeout = self._parsed(arg, "timeout", parse_duration, 0.0, "a valid golang duration")
        if timeout is None:
            return
        wait = self._parsed(arg, "wait", parse_duration, 0.0, "a valid golang duration")
        if wait is None:
            return
        code = self._parsed(arg, "code", int, 0, "an integer [0-127]")
        if code is None:
            return
        log.info("will begin shutdown in %ss, allowing %ss for connections to close, "
                 "then will exit with %d", wait, timeout, code)
        time.sleep(wait)
        if timeout == 0:
            flush_logs()
            os._exit(code)  # like upstream: no answer, the connection just closes
        self._reply(200, "")
        self.server.state.exit_code = code
        self.server.state.exit_requested.set()

    def _shutdown(self, arg: Callable[[str], str]) -> None:
        flush_logs()
        os._exit(0)

    def _shell(self, arg: Callable[[str], str]) -> None:
        cmd = arg("shellCommand") or arg("cmd")
        res = subprocess.run([SHELL, "-c", cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        out: dict[str, str] = {}
        if res.stdout:
            out["output"] = res.stdout.decode(errors="replace")
        if res.returncode != 0:
            out["error"] = (f"exit status {res.returncode}" if res.returncode > 0
                            else f"signal: {signal.Signals(-res.returncode).name}")
        self._reply(200, json.dumps(out))

    def _upload(self, arg: Callable[[str], str]) -> None:
        # Upstream writes into the image's /uploads; here that would be the host's.
        self._reply(200, json.dumps({"error": "Unable to upload file."}))

    def _dial(self, arg: Callable[[str], str]) -> None:
        host, port, request = arg("host"), arg("port"), arg("request")
        protocol, tries_s = arg("protocol").lower(), arg("tries")
        try:
            tries = int(tries_s) if tries_s else 1
        except ValueError as e:
            self._error(400, f"tries parameter is invalid. {e}")
            return
        if not request:
            self._error(400, "request parameter not specified. <nil>")
            return
        dialers: dict[str, Callable[[str, str, int], str]] = {
            "": dial_http, "http": dial_http, "udp": dial_udp, "sctp": dial_sctp}
        if protocol not in dialers:
            self._error(400, f"unsupported protocol. {protocol}")
            return
        try:
            port_n = int(port)
            if not 0 <= port_n <= 65535:
                raise ValueError(port)
        except ValueError:
            self._error(400, f"host and/or port param are invalid. address {port}: invalid port")
            return
        responses: list[str] = []
        errors: list[str] = []
        response = ""
        for _ in range(max(tries, 0)):
            try:
                response = dialers[protocol](request, host, port_n)
                responses.append(response)
            except Exception as e:
                response = ""
                errors.append(str(e))
        out: dict[str, list[str]] = {}
        if response:  # upstream's quirk: responses only when the last try answered
            out["responses"] = responses
        if errors:
            out["errors"] = errors
        self._reply(200, json.dumps(out))


def dial_http(request: str, host: str, port: int) -> str:
    url = f"http://{_host_port(host, port)}/{request}"
    conn = http.client.HTTPConnection(host, port, timeout=DIAL_TIMEOUT)
    try:
        conn.request("GET", "/" + request)
        return conn.getresponse().read().decode(errors="replace")
    except OSError as e:
        raise OSError(f'Get "{url}": {_oserror_text(e, "tcp", host, port)}') from e
    finally:
        conn.close()


def dial_udp(request: str, host: str, port: int) -> str:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        s = socket.socket(info[0], socket.SOCK_DGRAM)
    except OSError as e:
        raise OSError(f"udp dial failed. err:{e}") from e
    with s:
        try:
            s.connect(info[4])
            s.send(request.encode())
        except OSError as e:
            raise OSError(f"udp connection write failed. err:{e}") from e
        s.settimeout(DIAL_TIMEOUT)
        try:
            data = s.recv(2048)
        except OSError as e:
            text = _oserror_text(e, "udp", host, port)
            raise OSError(f"reading from udp connection failed. err:'{text}'") from e
        if not data:
            raise OSError("reading from udp connection failed. err:'<nil>'")
        return data.decode(errors="replace")


def dial_sctp(request: str, host: str, port: int) -> str:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        s = socket.socket(info[0], socket.SOCK_STREAM, getattr(socket, "IPPROTO_SCTP", 132))
    except OSError as e:
        raise OSError(f"sctp dial failed. err:{e}") from e
    with s:
        s.settimeout(DIAL_TIMEOUT)
        try:
            s.connect(info[4])
        except OSError as e:
            raise OSError(f"sctp dial failed. err:{e}") from e
        s.send(request.encode())
        data = s.recv(1024)
        if not data:
            raise OSError("reading from sctp connection failed. err:'EOF'")
        return data.decode(errors="replace")


def _oserror_text(e: OSError, net: str, host: str, port: int) -> str:
    if isinstance(e, TimeoutError):
        return f"dial {net} {_host_port(host, port)}: i/o timeout"
    reason = (e.strerror or str(e)).lower()
    return f"dial {net} {_host_port(host, port)}: connect: {reason}"


def udp_answer(text: str, client: Any) -> str | None:
    """What the netexec UDP/SCTP server answers to one datagram."""
    received = text.strip().lower()
    if received == "hostname":
        return hostname()
    if received.startswith("echo "):
        return received.split(" ", 1)[1]
    if received == "clientip":
        return _client_addr(client)
    if received:
        log.info("unknown UDP command received from %s: %s", client, received)
    return None


def serve_udp(sock: socket.socket, answer: Callable[[str, Any], str | None],
               ready: threading.Event | None) -> None:
    if ready is not None:
        ready.set()
    try:
        while True:
            try:
                data, client = sock.recvfrom(2048)
            except OSError:
                return  # closed at shutdown
            resp = answer(data.decode(errors="replace"), client)
            if resp is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(resp.encode(), client)
    finally:
        if ready is not None:
            ready.clear()


def serve_stream(sock: socket.socket, answer: Callable[[str, Any], str | None],
                  ready: threading.Event | None) -> None:
    """SCTP (one message per association) and serve-hostname's raw TCP."""
    sock.listen(64)
    if ready is not None:
        ready.set()
    try:
        while True:
            try:
                conn, client = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(DIAL_TIMEOUT)
                try:
                    data = conn.recv(1024)
                    resp = answer(data.decode(errors="replace"), client)
                    if resp is not None:
                        conn.sendall(resp.encode())
                except OSError:
                    pass
    finally:
        if ready is not None:
            ready.clear()


class Netexec:
    """The netexec servers, startable in-process (tests) or from the CLI."""

    def __init__(self, http_port: int = 8080, udp_port: int = 8081, sctp_port: int = -1,
                 udp_listen_addresses: str = "", http_override: str = "",
                 tls_cert_file: str = "", tls_private_key_file: str = "",
                 bind_host: str | None = None) -> None:
        self.state = NetexecState()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.httpd: ThreadingServer | None = None
        self.http_port = http_port
        self.udp_port = udp_port
        self.sctp_port = sctp_port
        self.udp_addresses = [a.strip() for a in udp_listen_addresses.split(",") if a.strip()]
        self.override = http_override
        self.tls: ssl.SSLContext | None = None
        if tls_cert_file:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(tls_cert_file, tls_private_key_file or None)
        self.bind_host = bind_host  # tests only: bind one address instead of all

    def _bind(self, sock_type: int, port: int, host: str | None = None, proto: int = 0
              ) -> socket.socket:
        host = host if host is not None else self.bind_host
        if host:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, sock_type, proto)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        else:
            s = bind_any(sock_type, port, proto)
        self.sockets.append(s)
        return s

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def start(self) -> Netexec:
        if self.udp_port != -1:
            addrs: list[str | None] = [*self.udp_addresses] or [None]
            for addr in addrs:
                s = self._bind(socket.SOCK_DGRAM, self.udp_port, addr)
                self.udp_port = s.getsockname()[1]
                self._thread("udp", serve_udp, s, udp_answer, self.state.server_ready)
            log.info("Started UDP server on port %d", self.udp_port)
        if self.sctp_port != -1:
            s = self._bind(socket.SOCK_STREAM, self.sctp_port,
                           proto=getattr(socket, "IPPROTO_SCTP", 132))
            self._thread("sctp", serve_stream, s, udp_answer, self.state.server_ready)
            log.info("Started SCTP server on port %d", self.sctp_port)
        sock = self._bind(socket.SOCK_STREAM, self.http_port)
        self.http_port = sock.getsockname()[1]
        self.httpd = ThreadingServer(sock, NetexecHandler, self.state, self.override, self.tls)
        self._thread("http", self.httpd.serve_forever)
        log.info("Started HTTP server on port %d", self.http_port)
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self.threads:
            t.join(5)


