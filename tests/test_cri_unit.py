"""The CRI runtime's pure parts: SPDY/3.1 framing and sessions, the CRI log
format, image references."""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import zlib
from pathlib import Path

import pytest

from localcluster.cri import spdy
from localcluster.cri.imageservice import ImageStore, normalized
from localcluster.cri.shim import CriLog
from localcluster.images import ImageError
from tests.waiting import eventually


def test_dictionary_is_the_spdy3_one() -> None:
    # sha256 of the 1423-byte dictionary of draft-mbelshe-httpbis-spdy-00 2.6.10.1
    assert len(spdy.DICTIONARY) == 1423
    assert hashlib.sha256(spdy.DICTIONARY).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02")


def test_header_block_round_trip_keeps_multiple_values() -> None:
    h = {"streamtype": ["data"], "port": ["8080"], "x": ["a", "b"]}
    assert spdy.decode_headers(spdy.encode_headers(h)) == h


def test_malformed_header_block_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError, match="malformed header block"):
        spdy.decode_headers(b"\x00\x00\x00\x05\x00")


class Client:
    """The peer's half, written from the SPDY/3 framing rules."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=spdy.DICTIONARY)
        self.f = sock.makefile("rb")

    def syn_stream(self, sid: int, headers: dict[str, list[str]], fin: bool = False) -> None:
        block = self.deflate.compress(spdy.encode_headers(headers)) + self.deflate.flush(
            zlib.Z_SYNC_FLUSH)
        payload = struct.pack(">IIH", sid, 0, 0) + block
        self.sock.sendall(spdy.control_frame(spdy.SYN_STREAM, 1 if fin else 0, payload))

    def frame(self) -> tuple[bool, int, int, bytes]:
        """(is control, type or stream id, flags, payload)"""
        word, rest = struct.unpack(">II", self.f.read(8))
        payload = self.f.read(rest & 0xFFFFFF)
        if word & 0x80000000:
            return True, word & 0xFFFF, rest >> 24, payload
        return False, word & 0x7FFFFFFF, rest >> 24, payload


def test_session_replies_echoes_pongs_and_half_closes() -> None:
    a, b = socket.socketpair()
    seen: list[spdy.Stream] = []

    def echo(s: spdy.Stream) -> None:
        seen.append(s)
        if s.type != "data":
            return

        def run() -> None:
            while data := s.read():
                s.write(data.upper())
            s.close()
        threading.Thread(target=run, daemon=True).start()

    session = spdy.Session(b.makefile("rb"), b.makefile("wb"), echo)
    threading.Thread(target=session.serve, daemon=True).start()
    c = Client(a)
    c.syn_stream(1, {"streamtype": ["data"], "requestid": ["0"]})
    ctl, kind, _, payload = c.frame()
    assert (ctl, kind) == (True, spdy.SYN_REPLY)
    assert struct.unpack(">I", payload[:4])[0] == 1
    assert spdy.decode_headers(c.inflate.decompress(payload[4:])) == {}
    eventually(lambda: len(seen) == 1, 5, "stream 1 handed over")
    assert seen[0].type == "data" and seen[0].header("requestid") == "0"
    # A second stream's headers inflate with the same (stateful) context.
    c.syn_stream(3, {"streamtype": ["error"]}, fin=True)
    assert c.frame()[:2] == (True, spdy.SYN_REPLY)
    eventually(lambda: len(seen) == 2, 5, "stream 3 handed over")
    assert seen[1].type == "error" and seen[1].remote_closed
    a.sendall(spdy.control_frame(spdy.PING, 0, struct.pack(">I", 7)))
    assert c.frame() == (True, spdy.PING, 0, struct.pack(">I", 7))
    a.sendall(spdy.data_frame(1, 0, b"hello"))
    assert c.frame() == (False, 1, 0, b"HELLO")
    a.sendall(spdy.data_frame(1, spdy.FLAG_FIN, b""))
    assert c.frame() == (False, 1, spdy.FLAG_FIN, b"")
    c.f.close()
    a.close()
    session.closed.wait(5)
    assert session.closed.is_set()
    b.close()


def test_wrong_version_goes_away() -> None:
    a, b = socket.socketpair()
    session = spdy.Session(b.makefile("rb"), b.makefile("wb"), lambda s: None)
    t = threading.Thread(target=session.serve, daemon=True)
    t.start()
    a.sendall(struct.pack(">HHI", 0x8000 | 2, spdy.PING, 4) + b"\0\0\0\1")
    c = Client(a)
    assert c.frame()[:2] == (True, spdy.GOAWAY)
    t.join(5)
    c.f.close()
    a.close()
    b.close()


def test_cri_log_lines_partials_and_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    log = CriLog(str(path))
    log.write("stdout", b"one\ntw")
    log.write("stderr", b"oops\n")
    log.write("stdout", b"o\n" + b"x" * (16 * 1024 + 5) + b"\n")
    log.close()
    entries = [line.split(" ", 3) for line in path.read_text().splitlines()]
    assert [(e[1], e[2], e[3]) for e in entries] == [
        ("stdout", "F", "one"), ("stdout", "P", "tw"), ("stderr", "F", "oops"),
        ("stdout", "F", "o"), ("stdout", "P", "x" * 16 * 1024), ("stdout", "F", "xxxxx")]
    assert all(e[0].endswith("Z") and "T" in e[0] for e in entries)


def test_image_references_normalise_like_runtimes() -> None:
    assert normalized("busybox") == "docker.io/library/busybox:latest"
    assert normalized("busybox:1.36") == "docker.io/library/busybox:1.36"
    assert normalized("registry.k8s.io/e2e-test-images/agnhost:2.53") == (
        "registry.k8s.io/e2e-test-images/agnhost:2.53")


def test_pulling_records_known_images_and_refuses_unknown(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images.json")
    iid = store.pull("busybox:1.36")
    assert store.resolve("docker.io/library/busybox:1.36") == iid
    assert store.resolve("busybox") is None  # another tag was never pulled
    assert store.image(iid).size > 0
    assert json.loads((tmp_path / "images.json").read_text()) == {
        iid: ["docker.io/library/busybox:1.36"]}
    with pytest.raises(ImageError, match=r'image "nginx:1\.27" is not in the image map'):
        store.pull("nginx:1.27")
    store.remove("busybox:1.36")
    assert store.resolve(iid) is None


def test_hostport_rules_match_the_host_ip_or_any_local_address() -> None:
    from localcluster.cri.hostports import ruleset
    nft = ruleset([
        ("10.244.0.5", {"hostPort": 54323, "containerPort": 8080, "protocol": "tcp",
                        "hostIP": "127.0.0.1"}),
        ("10.244.0.6", {"hostPort": 54323, "containerPort": 8081, "protocol": "udp",
                        "hostIP": ""}),
        ("fd00::5", {"hostPort": 80, "containerPort": 80, "protocol": "tcp"})])
    assert nft.startswith("table ip ovnkube-local-hostports {}\n"
                          "delete table ip ovnkube-local-hostports\n")
    for chain in ("prerouting", "output"):
        body = nft.split(f"chain {chain} {{")[1].split("}")[0]
        assert "ip daddr 127.0.0.1 tcp dport 54323 dnat to 10.244.0.5:8080" in body
        assert "fib daddr type local udp dport 54323 dnat to 10.244.0.6:8081" in body
        assert "fd00" not in body  # the table is IPv4 (the cluster is)


def test_terminal_sizes_are_read_across_chunk_boundaries() -> None:
    from localcluster.cri.streaming import terminal_sizes

    class Chunks:
        def __init__(self, parts: list[bytes]) -> None:
            self.parts = parts

        def read(self) -> bytes:
            return self.parts.pop(0) if self.parts else b""
    parts = [b'{"Width":80,"Hei', b'ght":24}{"Width":100,', b'"Height":30}']
    assert list(terminal_sizes(Chunks(parts))) == [(24, 80), (30, 100)]  # type: ignore[arg-type]
