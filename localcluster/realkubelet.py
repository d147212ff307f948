"""A node's real kubelet (k8s.io/kubernetes/cmd/kubelet) over the CRI runtime
of ovnkube-local (localcluster/cri), both inside the node's network namespace.

The kubelet is entered into the namespace with setns only (localcluster.nsexec,
like `nsenter --net`): `ip netns exec` would remount /sys and hide the cgroup
mounts the kubelet needs. Everything it writes is under the node's directory:
root dir, pod logs, certificates. What the kubelet changes outside it are
kernel tunables it insists on (vm.overcommit_memory, kernel.panic,
kernel.panic_on_oops); `KernelTunables` records them before the first kubelet
starts and puts them back when the last cluster is down.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from localcluster.kube import kube_bin
from localcluster.procs import Daemon

ROOT = Path(__file__).resolve().parent.parent
TUNABLES = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
            "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
SAVED_TUNABLES = Path("/run/ovnkube-local/kernel-tunables.json")


CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def kubelet_config(node_ip: str, ca: Path, root: Path, cri_socket: Path,
                   cluster_dns: list[str], control_plane: bool = False) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node_ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca)}},
        "authorization": {"mode": "Webhook"},
        # All nodes share one kernel and one cgroup tree: no per-pod cgroups,
        # no node allocatable enforcement, no swap or eviction policing.
        "cgroupDriver": "cgroupfs", "cgroupsPerQOS": False, "enforceNodeAllocatable": [],
        "failSwapOn": False, "evictionHard": {}, "localStorageCapacityIsolation": False,
        "imageGCHighThresholdPercent": 100,
        "containerRuntimeEndpoint": f"unix://{cri_socket}",
        "podLogsDir": str(root / "pod-logs"),
        "clusterDomain": "cluster.local", "clusterDNS": cluster_dns,
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "10s", "syncFrequency": "10s",
        "fileCheckFrequency": "20s", "shutdownGracePeriod": "0s",
        "maxPods": 110,
        **({"registerWithTaints": [CONTROL_PLANE_TAINT]} if control_plane else {}),
    }


def cri_socket_path(node_dir: Path) -> Path:
    return node_dir / "cri" / "cri.sock"


def node_daemons(node: str, netns: str, node_ip: str, node_dir: Path, kubeconfig: Path,
                 ca: Path, cni_conf: Path, cni_bin: Path, pod_netns_prefix: str,
                 cluster_dns: list[str], control_plane: bool = False,
                 mount_ns: Path | None = None) -> tuple[Daemon, Daemon]:
    """The CRI runtime and the kubelet of one node, not started yet; with
    `mount_ns`, both in the node's own filesystem view (localcluster.nodefs)."""
    cri_socket = cri_socket_path(node_dir)
    root = node_dir / "kubelet"
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.json"  # JSON is YAML
    config.write_text(json.dumps(kubelet_config(node_ip, ca, root, cri_socket, cluster_dns,
                                                control_plane),
                                 indent=1))
    env = {"PYTHONPATH": str(ROOT)}
    enter = [sys.executable, "-m", "localcluster.nsexec",
             *(["--mount", str(mount_ns)] if mount_ns else []), netns]
    runtime = Daemon("cri-runtime", [
        *enter,
        sys.executable, "-m", "localcluster.cri.server", f"--socket={cri_socket}",
        f"--state-dir={node_dir / 'cri'}", f"--cni-conf-dir={cni_conf}",
        f"--cni-bin-dir={cni_bin}", f"--netns-prefix={pod_netns_prefix}",
        f"--node-name={node}"], node_dir / "cri-runtime.log", env=env)
    kubelet = Daemon("kubelet", [
        *enter,
        kube_bin("kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
        f"--root-dir={root / 'root'}", f"--cert-dir={root / 'pki'}",
        f"--hostname-override={node}", f"--node-ip={node_ip}", "--v=1"],
        node_dir / "kubelet.log", env=env)
    return runtime, kubelet


def _read(name: str) -> str:
    return (Path("/proc/sys") / name).read_text().strip()


def save_kernel_tunables() -> None:
    """Record the tunables the kubelet will change, unless a running cluster
    already did (then the record holds the machine's own values)."""
    if SAVED_TUNABLES.exists():
        return
    SAVED_TUNABLES.parent.mkdir(parents=True, exist_ok=True)
    SAVED_TUNABLES.write_text(json.dumps({t: _read(t) for t in TUNABLES}))


def restore_kernel_tunables() -> None:
    """Put the recorded values back (the last cluster is gone)."""
    try:
        saved = json.loads(SAVED_TUNABLES.read_text())
    except (OSError, ValueError):
        return
    for name, value in saved.items():
        if name in TUNABLES and _read(name) != value:
            (Path("/proc/sys") / name).write_text(value)
    SAVED_TUNABLES.unlink(missing_ok=True)
