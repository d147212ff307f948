"""Forward TCP from a loopback port in the root namespace into a network
namespace, so tools outside (kubectl, tests) reach a server that lives only
inside it without the root namespace getting an address of its own.

The listening socket is made first, in the caller's namespace; then this
process switches its network namespace, so every connection it opens from then
on is made inside the target namespace.

    python -m localcluster.portforward --netns NS --target 10.0.0.1:6443 \
        --listen 127.0.0.1:0 --port-file PATH
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import threading
from pathlib import Path

from localcluster.netns import enter_netns


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _serve(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    # A relay must not hold small writes back for the peer's delayed ACK
    # (Nagle): that added ~40 ms to one API request in ten.
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    t.start()
    _pipe(client, upstream)
    t.join()
    client.close()
    upstream.close()


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--netns", required=True)
    p.add_argument("--target", required=True, type=parse_hostport)
    p.add_argument("--listen", default="127.0.0.1:0", type=parse_hostport)
    p.add_argument("--port-file", type=Path)
    args = p.parse_args(argv)

    listener = socket.create_server(args.listen, backlog=128)
    enter_netns(args.netns)
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(listener.getsockname()[1]))
        tmp.rename(args.port_file)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, args.target), daemon=True).start()


if __name__ == "__main__":
    main()
