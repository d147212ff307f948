"""agnhost's small servers: `porter` and `test-webserver`, as the e2e image has
them (the apiserver proxy and DNS tests use them).

porter serves fixed answers on the ports the environment names:

    SERVE_PORT_<port>=<text>       HTTP on <port>, every request answered <text>
    SERVE_TLS_PORT_<port>=<text>   the same over TLS (--cert-file, --key-file)
    SERVE_SCTP_PORT_<port>=<text>  SCTP: <text> to each association
    --json-response: {"Method": <request method>, "Body": <text>} instead

The image ships /localhost.crt and /localhost.key; where they are missing (a
container here sees the host's filesystem) a self-signed pair for
"localhost" is made once under ~/.cache/ovnkube/agnhost.

test-webserver serves the container's filesystem read-only over HTTP
(--port, default 80): the DNS tests read their probes' results from it.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
from pathlib import Path

PREFIXES = ("SERVE_PORT_", "SERVE_TLS_PORT_", "SERVE_SCTP_PORT_")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET6


# Go's http.DetectContentType HTML signatures: upstream porter sets no type,
# so Go sniffs one, and the apiserver proxy rewrites links only in text/html.
_HTML_TAGS = ("<!DOCTYPE HTML", "<HTML", "<HEAD", "<SCRIPT", "<IFRAME", "<H1", "<DIV",
              "<FONT", "<TABLE", "<A", "<STYLE", "<TITLE", "<B", "<BODY", "<BR", "<P", "<!--")


def sniff(text: str) -> str:
    t = text.lstrip("\t\n\x0c\r ").upper()
    for tag in _HTML_TAGS:
        if t.startswith(tag) and t[len(tag):len(tag) + 1] in (" ", ">"):
            return "text/html; charset=utf-8"
    return "text/plain; charset=utf-8"


def _handler(text: str, as_json: bool) -> type[http.server.BaseHTTPRequestHandler]:
    class Answer(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            body = (json.dumps({"Method": self.command, "Body": text}, separators=(",", ":"))
                    if as_json else text).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if as_json
                             else sniff(text))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _answer
    return Answer


def _cert(cert: str, key: str) -> tuple[str, str]:
    if os.path.exists(cert) and os.path.exists(key):
        return cert, key
    d = Path.home() / ".cache" / "ovnkube" / "agnhost"
    c, k = d / "localhost.crt", d / "localhost.key"
    if not (c.exists() and k.exists()):
        d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "3650", "-subj", "/CN=localhost", "-keyout", str(k), "-out", str(c)],
                       check=True, capture_output=True)
    return str(c), str(k)


def _sctp(port: int, text: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", port))
    s.listen(16)
    while True:
        conn, _ = s.accept()
        with conn:
            conn.sendall(text.encode())


def cmd_porter(a: argparse.Namespace) -> int:
    servers: list[_Server] = []
    env = {k: v for k, v in os.environ.items() if k.startswith(PREFIXES)}
    if not env:  # upstream then just waits; say why nothing answers
        print("porter: no SERVE_PORT_<port>, SERVE_TLS_PORT_<port> or SERVE_SCTP_PORT_<port> "
              "variables: nothing to serve", flush=True)
    for name, text in sorted(env.items()):
        prefix = next(p for p in PREFIXES if name.startswith(p))
        port_s = name.removeprefix(prefix)
        if not port_s.isdigit():
            print(f"porter: {name}: {port_s!r} is not a port number")
            return 1
        port = int(port_s)
        if prefix == "SERVE_SCTP_PORT_":
            threading.Thread(target=_sctp, args=(port, text), daemon=True).start()
            continue
        srv = _Server(("::", port), _handler(text, a.json_response))
        if prefix == "SERVE_TLS_PORT_":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*_cert(a.cert_file, a.key_file))
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        servers.append(srv)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        print(f"porter: serving {'TLS ' if prefix == 'SERVE_TLS_PORT_' else ''}on {port}",
              flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    for srv in servers:
        srv.shutdown()
    return 0


class _Files(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, directory="/", **kw)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:
        pass


def cmd_test_webserver(a: argparse.Namespace) -> int:
    srv = _Server(("::", a.port), _Files)
    print(f"test-webserver: serving / on {a.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever()
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("porter", help="serve the texts of SERVE_*PORT_<port> variables")
    p.add_argument("--cert-file", default="/localhost.crt")
    p.add_argument("--key-file", default="/localhost.key")
    p.add_argument("--json-response", action="store_true",
                   help='answer {"Method": <request method>, "Body": <text>}')
    p.set_defaults(func=cmd_porter)
    w = sub.add_parser("test-webserver", help="serve the filesystem over HTTP")
    w.add_argument("--port", type=int, default=80)
    w.set_defaults(func=cmd_test_webserver)
