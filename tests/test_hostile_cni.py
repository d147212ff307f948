"""Hostile input to the CNI server and shim: malformed JSON, wrong types,
unknown fields, huge bodies, bad container ids, interface names and netns
paths. Each gets the CNI spec's error code and a message naming the bad value;
the server keeps serving. The request parser is fuzzed with hypothesis.

(The same against the real agent, OVS and apiserver, with nothing left
half-made: tests/test_node_cni.py::test_hostile_requests_leave_nothing.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni import shim as cni_shim
from cni.shim import COMMANDS, CniError, post
from node import netlink
from node.cni_http import CniServer
from node.cni_request import MAX_REQUEST_BYTES, CniRequest, Timings, parse_request

SHIM = Path(__file__).resolve().parent.parent / "cni" / "shim.py"
CONF = {"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
       "CNI_IFNAME": "eth0",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1"}
# What the spec defines for a bad request (1 version, 2 field, 4 env, 6 decode, 7 config).
CALLER_CODES = {1, 2, 4, 6, 7}


def body(env: dict[str, Any] | None = None, conf: dict[str, Any] | str | None = None,
         **extra: Any) -> bytes:
    c = conf if isinstance(conf, str) else json.dumps({**CONF, **(conf or {})})
    return json.dumps({"env": {**ENV, **(env or {})}, "config": c, **extra}).encode()


# --- the parser, case by case -------------------------------------------------

@pytest.mark.parametrize(("raw", "code", "names"), [
    (b"{not json", 6, "not JSON"),
    (b"\xff\xfe\x00garbage", 6, "not JSON"),
    (b"[" * 100_000, 6, "not JSON"),  # RecursionError before
    (b"[1, 2]", 6, "[1, 2] is not an object"),
    (b'"env"', 6, "'env' is not an object"),
    (json.dumps({"env": [], "config": "{}"}).encode(), 6, "env [] is not an object"),
    (json.dumps({"env": ENV, "config": {"cniVersion": "1.1.0"}}).encode(), 6,
     "config {'cniVersion': '1.1.0'} is not a string"),
    (json.dumps({"env": {**ENV, "CNI_CONTAINERID": 12345}, "config": "{}"}).encode(), 4,
     "'CNI_CONTAINERID'=12345 is not a string"),
    (json.dumps({"env": {**ENV, "CNI_IFNAME": None}, "config": "{}"}).encode(), 4,
     "'CNI_IFNAME'=None"),
    (body(hello="world"), 2, "'hello'='world'"),
    (body(conf={"frobnicate": True}), 2, "'frobnicate'=True"),
    (body(conf="{" * 50_000), 6, "not JSON"),
    (body(conf={"cniVersion": "9.9.9"}), 1, "'9.9.9'"),
    (body(conf={"cniVersion": ["1.1.0"]}), 7, "cniVersion ['1.1.0']"),
    (body(conf={"prevResult": "x" * 1000}), 7, "prevResult 'xxxx"),
    (body({"CNI_CONTAINERID": "../../etc"}), 4, "'../../etc'"),
    (body({"CNI_CONTAINERID": "abc/def"}), 4, "'abc/def'"),
    (body({"CNI_CONTAINERID": ".."}), 4, "'..'"),
    (body({"CNI_CONTAINERID": "abc\n"}), 4, "'abc\\n'"),  # `$` matched before a newline
    (body({"CNI_CONTAINERID": "a" * 5000}), 4, "5002 characters"),
    (body({"CNI_IFNAME": "e" * 16}), 4, "'eeeeeeeeeeeeeeee'"),
    (body({"CNI_IFNAME": "\u00e9" * 8}), 4, "1-15 bytes"),  # 8 characters, 16 bytes
    (body({"CNI_IFNAME": "eth\x00"}), 4, "'eth\\x00'"),
    (body({"CNI_IFNAME": ".."}), 4, "'..'"),
    (body({"CNI_NETNS": "/run/netns/x\x00y"}), 4, "CNI_NETNS"),
    (body({"CNI_NETNS": "run/netns/x"}), 4, "'run/netns/x'"),
    (body({"CNI_COMMAND": "add"}), 4, "CNI_COMMAND 'add'"),
    (body({"CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;EVIL=1"}), 4, "'EVIL'"),
    (body({"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=../p"}), 4,
     "K8S_POD_NAME '../p'"),
    (body({"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + "n" * 64 + ";K8S_POD_NAME=p"}),
     4, "K8S_POD_NAMESPACE 'nnnn"),
    (b" " * (MAX_REQUEST_BYTES + 1), 7, f"more than {MAX_REQUEST_BYTES}"),
])
def test_bad_request_gets_its_spec_code(raw: bytes, code: int, names: str) -> None:
    with pytest.raises(CniError) as e:
        parse_request(raw)
    assert e.value.code == code, e.value.msg
    assert names in e.value.msg, e.value.msg
    assert len(e.value.msg) < 1000


def test_limits_that_are_still_fine() -> None:
    # A 253-character pod name, a 63-character namespace, a 15-byte ifname,
    # kubelet's 64-hex container id, unknown CNI_ARGS with IgnoreUnknown.
    name, ns = "p" * 253, "n" * 63
    req = parse_request(body({"CNI_CONTAINERID": "f" * 64, "CNI_IFNAME": "e" * 15,
                              "CNI_ARGS": f"IgnoreUnknown=true;K8S_POD_NAMESPACE={ns};"
                                          f"K8S_POD_NAME={name};SOMETHING_NEW=1"}))
    assert (req.pod_name, req.pod_namespace, req.ifname) == (name, ns, "e" * 15)
    # What libcni adds to a plugin config is not "unknown".
    req = parse_request(body(conf={"runtimeConfig": {}, "capabilities": {}, "mtu": 1400,
                                   "ipam": {}, "dns": {}}))
    assert req.config["mtu"] == 1400


# --- the parser, fuzzed -------------------------------------------------------

env_values = st.one_of(
    st.text(max_size=30), st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION",
                                           "abc123", "eth0", "/run/netns/x", "..", "a/b"]),
    st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2))
envs = st.dictionaries(st.sampled_from(["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME",
                                        "CNI_NETNS", "CNI_ARGS", "CNI_PATH", "OTHER"]),
                       env_values, max_size=7)
confs = st.one_of(
    st.dictionaries(st.sampled_from(["cniVersion", "name", "type", "serverSocket",
                                     "prevResult", "logFile", "unknown"]),
                    st.one_of(st.text(max_size=10), st.integers(), st.none(),
                              st.sampled_from(["1.1.0", "0.4.0", "ovn-k8s-cni-overlay"]),
                              st.dictionaries(st.text(max_size=3), st.integers(),
                                              max_size=2)),
                    max_size=7).map(lambda d: json.dumps({**CONF, **d})),
    st.text(max_size=40))
requests = st.one_of(
    st.binary(max_size=200),
    # One field of a good request changed: most of these get through to the checks.
    st.builds(lambda cmd, k, v: json.dumps({"env": {**ENV, "CNI_COMMAND": cmd, k: v},
                                            "config": json.dumps(CONF)}).encode(),
              st.sampled_from(COMMANDS), st.sampled_from(sorted(ENV)), env_values),
    st.builds(lambda e, c: json.dumps({"env": {**ENV, **e}, "config": c}).encode(), envs,
              confs),
    st.builds(lambda e, c: json.dumps({"env": e, "config": c}).encode(), envs, confs),
    st.builds(lambda d: json.dumps(d).encode(),
              st.dictionaries(st.sampled_from(["env", "config", "x"]),
                              st.one_of(st.text(max_size=5), st.integers(), st.none(),
                                        envs), max_size=3)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_parse_request_fuzzed(raw: bytes) -> None:
    try:
        req = parse_request(raw)
    except CniError as e:
        assert e.code in CALLER_CODES, (e.code, e.msg)
        assert e.msg and len(e.msg) < 1000
        return
    assert isinstance(req, CniRequest) and req.command in COMMANDS
    assert all(isinstance(v, str) for v in req.env.values())
    if req.command in ("ADD", "DEL", "CHECK"):
        assert cni_shim._CONTAINER_ID.fullmatch(req.container_id)
        assert "/" not in req.container_id and "\n" not in req.container_id
        assert 0 < len(req.ifname.encode()) <= 15 and "/" not in req.ifname
        assert req.netns.startswith("/") or (req.command == "DEL" and not req.netns)
        assert "\x00" not in req.netns
    if req.command in ("ADD", "CHECK"):
        assert req.pod_name and req.pod_namespace


# --- over the socket: the server keeps serving --------------------------------

class EchoHandler:
    """Stands in for CniHandler: answers every valid request with its command."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def not_ready(self) -> str:
        return ""

    def handle(self, req: CniRequest, timings: Timings) -> dict[str, Any] | None:
        self.seen.append(req.command)
        return {"cniVersion": req.version, "command": req.command}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[EchoHandler, Path]]:
    h = EchoHandler()
    sock = tmp_path / "s" / "cni.sock"
    srv = CniServer(sock, h).start()  # type: ignore[arg-type]
    try:
        yield h, sock
    finally:
        srv.stop()


def raw_http(sock: Path, data: bytes, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def assert_still_serving(sock: Path, h: EchoHandler) -> None:
    status, _, payload = post(str(sock), body(), timeout=30)
    assert status == 200 and json.loads(payload)["command"] == "ADD"
    assert h.seen[-1] == "ADD"


def test_ten_megabytes_and_garbage_over_the_socket(server: tuple[EchoHandler, Path]) -> None:
    h, sock = server
    # 10 MB body: refused with code 7 naming its size; the reply reaches the client.
    status, _, payload = post(str(sock), b"x" * (10 << 20), timeout=60)
    err = json.loads(payload)
    assert status == 400 and err["code"] == 7 and "10485760 bytes" in err["msg"], err
    assert_still_serving(sock, h)
    # A Content-Length that is no number, or negative: code 6 naming it.
    for length in (b"lots", b"-5"):
        status, err = raw_http(sock, b"POST /cni HTTP/1.1\r\nContent-Length: " + length
                               + b"\r\n\r\n{}")
        assert status == 400 and err["code"] == 6 and repr(length.decode()) in err["msg"], err
    # Fewer bytes than announced (then EOF): code 6, not a thread stuck forever.
    status, err = raw_http(sock, b"POST /cni HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{}")
    assert status == 400 and err["code"] == 6 and "got 2 of 1000 bytes" in err["msg"], err
    # Malformed JSON, wrong types, unknown fields, a bad container id.
    for data, code in ((b"{nope", 6), (b'{"env": 5, "config": ""}', 6),
                       (body(extra_field=1), 2), (body({"CNI_CONTAINERID": "../x"}), 4)):
        status, _, payload = post(str(sock), data, timeout=30)
        assert status == 400 and json.loads(payload)["code"] == code, payload
    assert_still_serving(sock, h)
    assert h.seen.count("ADD") == 2, "no hostile request reached the handler"


def test_many_hostile_clients_at_once(server: tuple[EchoHandler, Path]) -> None:
    h, sock = server
    bad = [b"{nope", b"[" * 100_000, body(conf={"zzz": 1}), body({"CNI_IFNAME": "x" * 40}),
           b"\x00" * 1000, body({"CNI_NETNS": "relative"})]

    def one(i: int) -> int:
        status, _, payload = post(str(sock), bad[i % len(bad)], timeout=60)
        return int(json.loads(payload)["code"]) if status == 400 else -status

    with ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(one, range(96)))
    assert set(codes) <= CALLER_CODES, codes
    assert_still_serving(sock, h)


def test_shim_refuses_huge_stdin_before_calling(server: tuple[EchoHandler, Path]) -> None:
    h, sock = server
    conf = {**CONF, "serverSocket": str(sock), "logFile": "",
            "args": {"pad": "x" * (10 << 20)}}
    res = subprocess.run([sys.executable, "-IS", str(SHIM)], input=json.dumps(conf),
                         text=True, capture_output=True, env=ENV, timeout=120)
    out = json.loads(res.stdout)
    assert res.returncode == 1 and out["code"] == 7 and "bytes, more than" in out["msg"], out
    assert h.seen == []
    # Unknown config field through the shim: code 2 with key and value.
    res = subprocess.run([sys.executable, "-IS", str(SHIM)],
                         input=json.dumps({**CONF, "serverSocket": str(sock), "logFile": "",
                                           "bogus": [1]}),
                         text=True, capture_output=True, env=ENV, timeout=60)
    out = json.loads(res.stdout)
    assert out["code"] == 2 and "'bogus'=[1]" in out["msg"], out
    assert h.seen == []


# --- netns paths that are not a pod's network namespace -------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces)")
def test_netns_problem_names_what_is_wrong(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a namespace")
    assert netlink.netns_problem(str(f)) == "is not a namespace"
    assert netlink.netns_problem(str(tmp_path)) == "is not a namespace"
    assert netlink.netns_problem(str(tmp_path / "gone")) == "does not exist"
    assert netlink.netns_problem("/proc/self/ns/mnt") == (
        "is a namespace, but not a network namespace")
    assert netlink.netns_problem("/proc/self/ns/net") == "is the node's own network namespace"
    name = f"hostile-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert netlink.netns_problem(f"/run/netns/{name}") == ""
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
