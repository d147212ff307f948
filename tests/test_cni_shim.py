"""The CNI shim executed the way kubelet executes it (env + stdin, result or
error JSON on stdout), against no server, a stub CNI server, and installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cni.shim import CniError
from node.cni_http import CniServer
from node.cni_request import CniRequest, Timings, build_result, parse_request
from node.install import install_conflist, install_shim
from node.netlink import PodIface
from ovnkube.annotations import PodNetwork

SHIM = Path(__file__).resolve().parent.parent / "cni" / "shim.py"
GOOD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/run/netns/x",
            "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
            "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u1"}


def conf(sock: Path | str, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "name": "ovn-kubernetes", "type": "ovn-k8s-cni-overlay",
            "serverSocket": str(sock), "logFile": "", **extra}


def shim(env: dict[str, str], stdin: str | dict[str, Any], exe: list[str] | None = None
         ) -> tuple[int, dict[str, Any] | None, str]:
    data = stdin if isinstance(stdin, str) else json.dumps(stdin)
    res = subprocess.run(exe or [sys.executable, "-IS", str(SHIM)], input=data, text=True,
                         capture_output=True, env=env, timeout=60)
    out = json.loads(res.stdout) if res.stdout.strip() else None
    return res.returncode, out, res.stderr


def test_version_needs_nothing_else() -> None:
    code, out, _ = shim({"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.0.0"})
    assert code == 0
    assert out == {"cniVersion": "1.0.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    code, out, _ = shim({"CNI_COMMAND": "VERSION"}, "")
    assert code == 0 and out and out["cniVersion"] == "1.1.0"


@pytest.mark.parametrize(("env_change", "stdin_change", "want_code", "want_in_msg"), [
    ({"CNI_COMMAND": None}, {}, 4, "CNI_COMMAND ''"),
    ({"CNI_COMMAND": "FROB"}, {}, 4, "'FROB'"),
    ({"CNI_CONTAINERID": None}, {}, 4, "CNI_CONTAINERID"),
    ({"CNI_CONTAINERID": "-bad id"}, {}, 4, "'-bad id'"),
    ({"CNI_NETNS": None}, {}, 4, "CNI_NETNS"),
    ({"CNI_NETNS": "relative/ns"}, {}, 4, "'relative/ns'"),
    ({"CNI_IFNAME": "much-too-long-ifname"}, {}, 4, "'much-too-long-ifname'"),
    ({"CNI_ARGS": "K8S_POD_NAMESPACE=ns;garbage"}, {}, 4, "'garbage'"),
    ({"CNI_ARGS": "K8S_POD_NAMESPACE=ns"}, {}, 4, "K8S_POD_NAME"),
    ({}, "{not json", 6, "not JSON"),
    ({}, "[1, 2]", 7, "JSON object"),
    ({}, {"type": "bridge"}, 7, "'bridge'"),
    ({}, {"name": ""}, 7, "name ''"),
    ({}, {"cniVersion": "0.3.1"}, 1, "'0.3.1'"),
    ({}, {"cniVersion": 7}, 7, "cniVersion 7"),
    ({}, {"serverSocket": 5}, 7, "serverSocket 5"),
    ({"CNI_COMMAND": "CHECK"}, {}, 7, "prevResult"),
])
def test_bad_input_gives_the_spec_code(tmp_path: Path, env_change: dict[str, str | None],
                                       stdin_change: dict[str, Any] | str, want_code: int,
                                       want_in_msg: str) -> None:
    env = {k: v for k, v in {**GOOD_ENV, **env_change}.items() if v is not None}
    stdin: dict[str, Any] | str = (stdin_change if isinstance(stdin_change, str)
                                   else {**conf(tmp_path / "none.sock"), **stdin_change})
    code, out, err = shim(env, stdin)
    assert code == 1 and out is not None, err
    assert out["code"] == want_code, out
    assert want_in_msg in out["msg"], out
    assert f"code {want_code}" in err  # logged on stderr


def test_server_down_means_try_again_and_status_50(tmp_path: Path) -> None:
    code, out, _ = shim(GOOD_ENV, conf(tmp_path / "none.sock"))
    assert code == 1 and out and out["code"] == 11 and "not running" in out["msg"]
    code, out, _ = shim({**GOOD_ENV, "CNI_COMMAND": "DEL"}, conf(tmp_path / "none.sock"))
    assert out and out["code"] == 11
    code, out, _ = shim({"CNI_COMMAND": "STATUS"}, conf(tmp_path / "none.sock"))
    assert code == 1 and out and out["code"] == 50


@dataclass
class StubHandler:
    """Stands in for the real CniHandler: records requests, answers as told."""

    answer: dict[str, Any] | None = None
    error: CniError | None = None
    seen: list[CniRequest] = field(default_factory=list)

    def not_ready(self) -> str:
        return ""

    def handle(self, req: CniRequest, timings: Timings) -> dict[str, Any] | None:
        self.seen.append(req)
        timings.annotation, timings.plumbing, timings.ovn_installed = 0.001, 0.002, 0.003
        if self.error:
            raise self.error
        return self.answer


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[tuple[StubHandler, Path]]:
    h = StubHandler()
    sock = tmp_path / "s" / "cni.sock"
    srv = CniServer(sock, h).start()  # type: ignore[arg-type]
    try:
        yield h, sock
    finally:
        srv.stop()


def test_result_and_errors_cross_the_socket(stub: tuple[StubHandler, Path],
                                            tmp_path: Path) -> None:
    h, sock = stub
    assert oct(sock.stat().st_mode & 0o777) == "0o600"
    h.answer = {"cniVersion": "1.1.0", "ips": [{"address": "10.244.1.5/24"}]}
    log_file = tmp_path / "shim.log"
    code, out, err = shim(GOOD_ENV, conf(sock, logFile=str(log_file)))
    assert code == 0 and out == h.answer
    req = h.seen[-1]
    assert (req.command, req.pod_namespace, req.pod_name, req.pod_uid) == ("ADD", "ns", "p", "u1")
    assert req.env["CNI_NETNS"] == "/run/netns/x" and req.config["name"] == "ovn-kubernetes"
    assert "annotation=1.0ms plumbing=2.0ms ovn-installed=3.0ms" in err
    assert "plumbing=2.0ms" in log_file.read_text()
    # DEL / GC / STATUS success: exit 0 and nothing on stdout.
    h.answer = None
    for cmd in ("DEL", "GC", "STATUS"):
        code, out, _ = shim({**GOOD_ENV, "CNI_COMMAND": cmd}, conf(sock))
        assert (code, out) == (0, None), cmd
    # Our own error codes come back as they are, with the config's cniVersion.
    h.error = CniError(102, "timed out waiting for ovn-installed", "details here")
    code, out, _ = shim(GOOD_ENV, conf(sock, cniVersion="1.0.0"))
    assert code == 1
    assert out == {"cniVersion": "1.0.0", "code": 102, "msg": "timed out waiting for "
                   "ovn-installed", "details": "details here"}


def test_installed_shim_is_self_contained(tmp_path: Path,
                                          stub: tuple[StubHandler, Path]) -> None:
    h, sock = stub
    exe = install_shim(tmp_path / "bin")
    assert exe.read_text().startswith("#!") and os.access(exe, os.X_OK)
    first = exe.read_text().splitlines()[0]
    assert first.endswith(" -IS")
    code, out, _ = shim({"CNI_COMMAND": "VERSION"}, "{}", exe=[str(exe)])
    assert code == 0 and out and "1.1.0" in out["supportedVersions"]
    h.answer = {"cniVersion": "1.1.0"}
    cl = json.loads(install_conflist(tmp_path / "net.d", sock, "", 1400).read_text())
    plugin = {"cniVersion": cl["cniVersion"], "name": cl["name"], **cl["plugins"][0]}
    code, out, _ = shim(GOOD_ENV, plugin, exe=[str(exe)])
    assert (code, out) == (0, {"cniVersion": "1.1.0"})
    # Only the final files: no temporary leftovers kubelet could pick up.
    assert sorted(p.name for p in (tmp_path / "net.d").iterdir()) == [
        "10-ovn-kubernetes.conflist"]
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["ovn-k8s-cni-overlay"]


def test_shim_start_up_is_small() -> None:
    # Not a timing assertion: only that the shim imports nothing heavy.
    res = subprocess.run([sys.executable, "-IS", "-X", "importtime", str(SHIM)],
                         input="{}", text=True, capture_output=True,
                         env={"CNI_COMMAND": "VERSION"}, timeout=60)
    modules = {line.split("|")[-1].strip() for line in res.stderr.splitlines()[1:]}
    for heavy in ("logging", "http.client", "email", "urllib", "asyncio", "ssl"):
        assert heavy not in modules


def test_parse_request_rejects_garbage() -> None:
    with pytest.raises(CniError) as e:
        parse_request(b"nope")
    assert e.value.code == 6
    with pytest.raises(CniError) as e:
        parse_request(json.dumps({"env": {"CNI_COMMAND": "ADD"}, "config": "{}"}).encode())
    assert e.value.code == 4
    req = parse_request(json.dumps({"env": {"CNI_COMMAND": "GC"},
                                    "config": json.dumps(conf("/x"))}).encode())
    assert req.command == "GC"


def test_result_for_old_cni_version_has_ip_version() -> None:
    net = PodNetwork.parse(json.dumps({"default": {
        "ip_addresses": ["10.244.1.5/24"], "mac_address": "0a:58:0a:f4:01:05",
        "gateway_ips": ["10.244.1.1"], "routes": [{"dest": "10.96.0.0/16",
                                                   "nextHop": "10.244.1.1"}]}}))
    iface = PodIface("abc", "aa:bb:cc:dd:ee:ff", "0a:58:0a:f4:01:05", 3)
    for version, want in (("0.4.0", {"version": "4"}), ("1.1.0", {})):
        req = CniRequest("ADD", {"CNI_IFNAME": "eth0", "CNI_NETNS": "/run/netns/x"},
                         {"cniVersion": version}, {})
        r = build_result(req, net, iface)
        assert r["cniVersion"] == version
        assert r["ips"] == [{"address": "10.244.1.5/24", "interface": 1,
                             "gateway": "10.244.1.1", **want}]
        assert r["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"},
                               {"dst": "10.96.0.0/16", "gw": "10.244.1.1"}]
        assert r["interfaces"][1] == {"name": "eth0", "mac": "0a:58:0a:f4:01:05",
                                      "sandbox": "/run/netns/x"}


def test_shim_timing_is_reported(tmp_path: Path) -> None:
    t0 = time.monotonic()
    shim({"CNI_COMMAND": "VERSION"}, "{}")
    assert time.monotonic() - t0 < 30  # generous: only that it does not hang
