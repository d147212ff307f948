"""The CRI runtime as the kubelet drives it, over its real gRPC socket: a
host-network sandbox (no CNI needed), containers with mounts, logs, exec,
stop and stats. The kubelet itself drives it in tests/test_e2e_kubectl.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from localcluster.cri.gen import api_pb2 as pb
from localcluster.cri.gen import api_pb2_grpc as pbg
from tests.conftest import need_root
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cri(tmp_path: Path) -> Iterator[tuple[pbg.RuntimeServiceStub, pbg.ImageServiceStub, Path]]:
    need_root()
    sock = tmp_path / "cri.sock"
    (tmp_path / "net.d").mkdir()
    with open(tmp_path / "cri.log", "wb") as log:
        p = subprocess.Popen([sys.executable, "-m", "localcluster.cri.server",
                              f"--socket={sock}", f"--state-dir={tmp_path / 'state'}",
                              f"--cni-conf-dir={tmp_path / 'net.d'}",
                              f"--cni-bin-dir={tmp_path}", "--netns-prefix=ovkt-cri-",
                              "--node-name=n1"], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=log)
    try:
        eventually(sock.exists, 30, "the CRI socket")
        ch = grpc.insecure_channel(f"unix://{sock}")
        yield pbg.RuntimeServiceStub(ch), pbg.ImageServiceStub(ch), tmp_path
        ch.close()
    finally:
        from localcluster.cri.cleanup import kill_containers
        kill_containers(tmp_path / "state")
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)


def _sandbox(rt: pbg.RuntimeServiceStub, logs: Path) -> str:
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u1", namespace="ns", attempt=0),
        hostname="p", log_directory=str(logs),
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(network=pb.NODE))))
    return str(rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id)


def _container(rt: pbg.RuntimeServiceStub, sid: str, name: str, args: list[str],
               mounts: list[pb.Mount] = ()) -> str:  # type: ignore[assignment]
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                             image=pb.ImageSpec(image="busybox"), command=["sh", "-c"],
                             args=args, log_path=f"{name}/0.log", mounts=list(mounts),
                             envs=[pb.KeyValue(key="GREETING", value="hi")])
    cid = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=sid, config=cfg)
                             ).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=cid))
    return str(cid)


def test_status_reports_the_network_not_ready_without_cni_config(cri) -> None:  # type: ignore[no-untyped-def]
    rt, _, _ = cri
    assert rt.Version(pb.VersionRequest()).runtime_name == "ovnkube-local"
    conds = {c.type: c for c in rt.Status(pb.StatusRequest()).status.conditions}
    assert conds["RuntimeReady"].status
    assert not conds["NetworkReady"].status
    assert conds["NetworkReady"].reason == "NetworkPluginNotReady"


def test_pull_create_start_logs_exec_stop(cri) -> None:  # type: ignore[no-untyped-def]
    rt, img, tmp = cri
    with pytest.raises(grpc.RpcError) as err:
        img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="nginx:1.27")))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nginx:1.27" in str(err.value.details())
    ref = img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="busybox"))).image_ref
    assert img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image="busybox"))
                           ).image.id == ref
    logs = tmp / "logs"
    sid = _sandbox(rt, logs)
    # A volume: the kubelet's host dir bound at a container path, seen by the
    # container alone (the host's own dir there stays empty).
    vol, target = tmp / "vol", tmp / "target"
    vol.mkdir()
    target.mkdir()
    (vol / "f").write_text("from the volume")
    cid = _container(rt, sid, "c", ["echo $GREETING; echo oops >&2; hostname; sleep 60"],
                     [pb.Mount(host_path=str(vol), container_path=str(target),
                               readonly=True)])
    st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert st.state == pb.CONTAINER_RUNNING and st.started_at > 0

    def logged() -> list[list[str]]:
        lines = [ln.split(" ", 3) for ln in (logs / "c" / "0.log").read_text().splitlines()]
        return lines if len(lines) >= 3 else []
    lines = eventually(logged, 10, "three log lines")
    assert sorted((s, t) for _, s, _, t in lines) == [
        ("stderr", "oops"), ("stdout", "hi"), ("stdout", "n1")]  # hostNetwork: node name
    res = rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["cat", f"{target}/f"],
                                         timeout=10))
    assert (res.exit_code, res.stdout) == (0, b"from the volume")
    assert list(target.iterdir()) == []
    res = rt.ExecSync(pb.ExecSyncRequest(container_id=cid,
                                         cmd=["sh", "-c", f"echo x > {target}/g"], timeout=10))
    assert res.exit_code != 0 and b"Read-only file system" in res.stderr
    stats = rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert stats.memory.working_set_bytes.value > 0
    t0 = time.monotonic()
    rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))
    assert time.monotonic() - t0 < 10  # sh dies of SIGTERM at once
    st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 143, "Error")
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert not rt.ListContainers(pb.ListContainersRequest()).containers
    assert not rt.ListPodSandbox(pb.ListPodSandboxRequest()).items


def test_exited_container_reports_its_code_and_state_survives_a_restart(cri) -> None:  # type: ignore[no-untyped-def]
    rt, img, tmp = cri
    img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image="busybox")))
    sid = _sandbox(rt, tmp / "logs")
    cid = _container(rt, sid, "quick", ["exit 3"])

    def exited() -> pb.ContainerStatus | None:
        st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        return st if st.state == pb.CONTAINER_EXITED else None
    st = eventually(exited, 10, "the container to exit")
    assert (st.exit_code, st.reason) == (3, "Error")
    saved = json.loads(next((tmp / "state" / "containers").glob("*.json")).read_text())
    assert saved["id"] == cid


SLOW_PLUGIN = """#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) sleep 2
     echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}],' \
          '"ips":[{"address":"10.244.9.7/24","interface":0}]}' ;;
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
"""


def test_a_sandbox_is_listed_only_once_its_network_is_set_up(cri) -> None:  # type: ignore[no-untyped-def]
    # The kubelet's PLEG caches what one relist shows: a READY sandbox without
    # its IP, seen during the CNI ADD, left pods without status.podIPs for good.
    import threading
    rt, _, tmp = cri
    plugin = tmp / "slow"
    plugin.write_text(SLOW_PLUGIN)
    plugin.chmod(0o755)
    (tmp / "net.d" / "10-slow.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "slow"}]}))
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u2", namespace="ns", attempt=0),
        hostname="p", log_directory=str(tmp / "logs"))
    done: list[str] = []
    t = threading.Thread(target=lambda: done.append(
        rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg)).pod_sandbox_id))
    t.start()
    seen_during_add = []
    while t.is_alive():
        seen_during_add += rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
        time.sleep(0.05)
    t.join()
    assert done
    sid = done[0]
    try:
        assert not seen_during_add
        (listed,) = rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
        assert (listed.id, listed.state) == (sid, pb.SANDBOX_READY)
        st = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
        assert st.network.ip == "10.244.9.7"
    finally:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert not rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
