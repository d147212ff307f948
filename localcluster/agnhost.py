"""Our agnhost: the subcommands of Kubernetes' e2e test image that network tests
use, with the same flags, defaults and answers, for pods the local cluster runs
as processes (it cannot pull the image).

    python -m localcluster.agnhost netexec [--http-port=8080] [--udp-port=8081]
        [--sctp-port=-1] [--delay-shutdown=0] [--udp-listen-addresses=...]
        [--http-override=PATH] [--tls-cert-file=F --tls-private-key-file=F]
    python -m localcluster.agnhost pause [--delay-shutdown=0]
    python -m localcluster.agnhost serve-hostname [--port=9376] [--http] [--tcp] [--udp]
    python -m localcluster.agnhost connect HOST:PORT [--timeout=1s] [--protocol=tcp|udp|sctp]
    python -m localcluster.agnhost porter | test-webserver [--port=80]   (agnhost_servers.py)
    python -m localcluster.agnhost dns-suffix | dns-server-list | etc-hosts   (agnhost_dns.py)

The hostname it reports is the UTS namespace's, as upstream's os.Hostname():
the pod's hostname in a pod, the node's for a host-network pod.
Where upstream's code and its help text disagree (e.g. /dial and /shell answer
200 even when the call failed), this follows the code.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from localcluster.agnhost_netexec import (
    Netexec,
    NetexecState,
    ThreadingServer,
    bind_any,
    flush_logs,
    hostname,
    parse_duration,
    serve_stream,
    serve_udp,
)

log = logging.getLogger("agnhost")


# --- serve-hostname ----------------------------------------------------------

class _HostnameHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    close_each = False

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        data = hostname().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if self.close_each:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET


# --- command line ------------------------------------------------------------

class _Signals:
    """Catch these signals from now on (install before saying we are up)."""

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        self.got: list[signal.Signals] = []
        self.done = threading.Event()
        for s in signals:
            signal.signal(s, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.got.append(signal.Signals(signum))
        self.done.set()

    def wait(self) -> signal.Signals:
        while not self.done.wait(1.0):
            pass
        return self.got[0]


def _bool_flag(p: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    # pflag booleans: --x, --x=true, --x=false
    p.add_argument(name, nargs="?", const="true", default="true" if default else "false",
                   help=help)


def _truthy(v: str) -> bool:
    return v.lower() in ("1", "t", "true", "yes")


def cmd_netexec(a: argparse.Namespace) -> int:
    server = Netexec(a.http_port, a.udp_port, a.sctp_port, a.udp_listen_addresses,
                     a.http_override, a.tls_cert_file, a.tls_private_key_file)
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        server.state.sigterm.set()
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    server.start()
    while not stop.wait(0.5):
        if server.state.exit_requested.is_set():
            server.stop()
            return server.state.exit_code or 0
    if a.delay_shutdown > 0 and server.state.sigterm.is_set():
        log.info("Sleeping %d seconds before terminating...", a.delay_shutdown)
        time.sleep(a.delay_shutdown)
    server.stop()
    return 0


def cmd_pause(a: argparse.Namespace) -> int:
    signals = _Signals([signal.SIGINT, signal.SIGTERM])
    print("Paused", flush=True)
    sig = signals.wait()
    result = 1 if sig == signal.SIGINT else 2
    if a.delay_shutdown > 0:
        print(f"Sleeping {a.delay_shutdown} seconds before exit ...", flush=True)
        time.sleep(a.delay_shutdown)
    print(f"exiting {result}", flush=True)
    return result


def cmd_serve_hostname(a: argparse.Namespace) -> int:
    tcp, udp, use_http = _truthy(a.tcp), _truthy(a.udp), _truthy(a.http)
    if use_http and (tcp or udp):
        print("Can't set TCP or UDP with HTTP", file=sys.stderr)
        return 1
    socks: list[socket.socket] = []
    httpd: ThreadingServer | None = None
    signals = _Signals([signal.SIGINT, signal.SIGTERM])

    def answer(text: str, client: Any) -> str:
        return hostname()

    if tcp:
        s = bind_any(socket.SOCK_STREAM, a.port)
        socks.append(s)
        threading.Thread(target=serve_stream, args=(s, answer, None), daemon=True).start()
    if udp:
        s = bind_any(socket.SOCK_DGRAM, a.port)
        socks.append(s)
        threading.Thread(target=serve_udp, args=(s, answer, None), daemon=True).start()
    if use_http:
        handler = type("H", (_HostnameHandler,), {"close_each": _truthy(a.close)})
        s = bind_any(socket.SOCK_STREAM, a.port)
        httpd = ThreadingServer(s, handler, NetexecState(), "", None)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    log.info("Serving on port %d.", a.port)
    signals.wait()
    if httpd is not None:
        httpd.shutdown()
        httpd.server_close()
    for s in socks:
        s.close()
    return 0


def cmd_connect(a: argparse.Namespace) -> int:
    try:
        timeout = parse_duration(a.timeout)
    except ValueError as e:
        print(f"UNKNOWN: {e}", file=sys.stderr)
        return 1
    host, sep, port_s = a.dest.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_s.isdigit():
        print(f"UNKNOWN: address {a.dest}: missing port in address", file=sys.stderr)
        return 1
    port = int(port_s)
    stype = socket.SOCK_DGRAM if a.protocol == "udp" else socket.SOCK_STREAM
    proto = getattr(socket, "IPPROTO_SCTP", 132) if a.protocol == "sctp" else 0
    if a.protocol not in ("", "tcp", "udp", "sctp"):
        print(f"Unsupported protocol\n{a.protocol}", file=sys.stderr)
        return 1
    try:
        info = socket.getaddrinfo(host, port, type=stype)[0]
    except OSError as e:
        print(f"DNS: {e}", file=sys.stderr)
        return 1
    s = socket.socket(info[0], stype, proto)
    s.settimeout(timeout if timeout > 0 else None)
    try:
        with s:
            s.connect(info[4])
            if a.protocol == "udp":
                s.send(f"{a.udp_data}\n".encode())
                if not s.recv(1024):
                    print("OTHER: No data received from the server.", file=sys.stderr)
                    return 1
            elif a.protocol == "sctp":
                s.send(f"{a.sctp_data}\n".encode())
                s.recv(1024)
        return 0
    except TimeoutError:
        print("TIMEOUT", file=sys.stderr)
    except ConnectionRefusedError as e:
        print("REFUSED" if a.protocol != "udp" else f"REFUSED: {e}", file=sys.stderr)
    except OSError as e:
        print(f"OTHER: {e}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agnhost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command")
    n = sub.add_parser("netexec", help="HTTP(S), UDP and (optionally) SCTP test servers")
    n.add_argument("--http-port", type=int, default=8080)
    n.add_argument("--udp-port", type=int, default=8081)
    n.add_argument("--sctp-port", type=int, default=-1)
    n.add_argument("--udp-listen-addresses", default="")
    n.add_argument("--http-override", default="")
    n.add_argument("--tls-cert-file", default="")
    n.add_argument("--tls-private-key-file", default="")
    n.add_argument("--delay-shutdown", type=int, default=0)
    n.set_defaults(func=cmd_netexec)
    pa = sub.add_parser("pause", help="sleep until SIGTERM/SIGINT")
    pa.add_argument("--delay-shutdown", type=int, default=0)
    pa.set_defaults(func=cmd_pause)
    sh = sub.add_parser("serve-hostname", help="serve the hostname over HTTP, TCP or UDP")
    _bool_flag(sh, "--tcp", False, "serve raw over TCP")
    _bool_flag(sh, "--udp", False, "serve raw over UDP")
    _bool_flag(sh, "--http", True, "serve HTTP")
    _bool_flag(sh, "--close", False, "close the connection after each HTTP request")
    sh.add_argument("--port", type=int, default=9376)
    sh.set_defaults(func=cmd_serve_hostname)
    c = sub.add_parser("connect", help="try a TCP, UDP or SCTP connection")
    c.add_argument("dest")
    c.add_argument("--timeout", default="0")
    c.add_argument("--protocol", default="tcp")
    c.add_argument("--udp-data", default="hostname")
    c.add_argument("--sctp-data", default="hostname")
    c.set_defaults(func=cmd_connect)
    from localcluster import agnhost_dns, agnhost_servers
    agnhost_servers.add_parsers(sub)
    agnhost_dns.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    known = {"netexec", "pause", "serve-hostname", "connect", "porter", "test-webserver",
             "dns-suffix", "dns-server-list", "etc-hosts"}
    if args and not args[0].startswith("-") and args[0] not in known:
        print(f"agnhost: subcommand {args[0]!r} is not implemented by this agnhost "
              f"(have: {', '.join(sorted(known))})", file=sys.stderr)
        return 1
    a = parser.parse_args(args or ["pause"])  # the image's default CMD is pause
    rc: int = a.func(a)
    flush_logs()
    return rc


if __name__ == "__main__":
    sys.exit(main())
