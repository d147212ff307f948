"""A node test bed for the netns-kubelet: a "node" network namespace with a Linux
bridge (the pods' veth host ends go there, never into the root namespace), a
real test CNI plugin executed like kubelet executes plugins, and an in-process
NetnsKubelet; plus small API helpers. Everything is removed at teardown."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster import netns as nets
from localcluster.kube import KubeControlPlane
from localcluster.kubelet import KubeletConfig, NetnsKubelet
from ovnkube.kubeclient import request
from tests.waiting import eventually as eventually  # re-exported for the tests

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"

# The test CNI plugin: stdlib only, executed with the CNI_* environment and its
# config on stdin. ADD: a veth pair, the pod end moved into CNI_NETNS as
# CNI_IFNAME with an IP from a file-based pool, the host end on the bridge of
# the namespace the plugin runs in (the node's). DEL: removes both, frees the IP.
# Pods whose name starts with conf["failPodPrefix"] get a CNI error. Every call
# is appended to conf["logFile"] (JSON lines) so tests can see what kubelet did.
PLUGIN = r'''
import fcntl, ipaddress, json, os, subprocess, sys

def ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout

def fail(code, msg, details=""):
    print(json.dumps({"cniVersion": "1.1.0", "code": code, "msg": msg, "details": details}))
    sys.exit(1)

def cni_args():
    out = {}
    for kv in os.environ.get("CNI_ARGS", "").split(";"):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k] = v
    return out

def main():
    cmd = os.environ.get("CNI_COMMAND", "")
    raw = sys.stdin.read()
    conf = json.loads(raw) if raw.strip() else {}
    if conf.get("logFile"):
        with open(conf["logFile"], "a") as f:
            f.write(json.dumps({"plugin": conf.get("type"), "command": cmd,
                                "env": {k: v for k, v in os.environ.items()
                                        if k.startswith("CNI_")},
                                "conf": conf}) + "\n")
    if cmd == "VERSION":
        print(json.dumps({"cniVersion": "1.1.0",
                          "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}))
        return
    if cmd in ("CHECK", "STATUS", "GC"):
        return
    if conf.get("type") == "test-chain":  # a chained plugin: passes prevResult through
        if cmd == "ADD":
            if "prevResult" not in conf:
                fail(7, "test-chain needs a prevResult")
            print(json.dumps(conf["prevResult"]))
        return
    cid = os.environ.get("CNI_CONTAINERID", "")
    host = "tv" + cid[:12]
    ipam = conf["ipamDir"]
    os.makedirs(ipam, exist_ok=True)
    subnet = ipaddress.ip_network(conf["subnet"])
    gw = str(next(subnet.hosts()))
    if cmd == "DEL":
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        for name in os.listdir(ipam):
            p = os.path.join(ipam, name)
            try:
                if open(p).read() == cid:
                    os.unlink(p)
            except OSError:
                pass
        return
    if cmd != "ADD":
        fail(4, f"unknown CNI_COMMAND {cmd!r}")
    pod = cni_args().get("K8S_POD_NAME", "")
    if conf.get("failPodPrefix") and pod.startswith(conf["failPodPrefix"]):
        fail(11, f"{conf.get('failMessage', 'test plugin refuses')} (pod {pod})",
             "asked to fail by failPodPrefix")
    netns_path = os.environ["CNI_NETNS"]
    if not netns_path.startswith("/run/netns/"):
        fail(4, f"CNI_NETNS {netns_path!r} is not under /run/netns")
    ns = os.path.basename(netns_path)
    ifname = os.environ.get("CNI_IFNAME", "eth0")
    with open(os.path.join(ipam, ".lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        for cand in list(subnet.hosts())[1:]:
            try:
                fd = os.open(os.path.join(ipam, str(cand)), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.write(fd, cid.encode())
            os.close(fd)
            addr = str(cand)
            break
        else:
            fail(11, f"no free address in {subnet}")
    tmp = "tp" + cid[:12]
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", tmp, "netns", ns)
        ip("-n", ns, "link", "set", tmp, "name", ifname)
        ip("-n", ns, "addr", "add", f"{addr}/{subnet.prefixlen}", "dev", ifname)
        ip("-n", ns, "link", "set", ifname, "up")
        ip("-n", ns, "route", "add", "default", "via", gw)
        ip("link", "set", host, "master", conf["bridge"], "up")
        pod_mac = json.loads(ip("-n", ns, "-j", "link", "show", ifname))[0]["address"]
        host_mac = json.loads(ip("-j", "link", "show", host))[0]["address"]
    except RuntimeError as e:
        subprocess.run(["ip", "link", "del", host], capture_output=True)
        os.unlink(os.path.join(ipam, addr))
        fail(11, str(e))
    print(json.dumps({
        "cniVersion": conf.get("cniVersion", "1.1.0"),
        "interfaces": [{"name": host, "mac": host_mac},
                       {"name": ifname, "mac": pod_mac, "sandbox": netns_path}],
        "ips": [{"address": f"{addr}/{subnet.prefixlen}", "gateway": gw, "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": gw}],
        "dns": {},
    }))

main()
'''


def install_plugins(bin_dir: Path) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("test-veth", "test-chain"):
        p = bin_dir / name
        p.write_text(f"#!{sys.executable} -I\n{PLUGIN}")
        p.chmod(0o755)


def tempdir() -> Path:
    # Under /tmp/ovk-: the sweep finds processes started from here.
    return Path(tempfile.mkdtemp(prefix="ovk-kl-", dir="/tmp"))


@dataclass
class KubeletNode:
    """One node: its namespace with bridge br0 (the pods' gateway), CNI dirs with
    the test plugin, and a NetnsKubelet running in this process."""

    cp: KubeControlPlane
    prefix: str  # namespaces are named <prefix>node, pods <prefix>p-<uid8>
    index: int = 1
    keep_pods: bool = False
    state_dir: Path | None = None
    dir: Path = field(default_factory=tempdir)
    name: str = field(default_factory=lambda: f"kl-node-{secrets.token_hex(3)}")
    kubelet: NetnsKubelet | None = None
    netnses: nets.NetnsSet | None = None
    fail_pod_prefix: str = "bad-"

    @property
    def netns(self) -> str:
        return f"{self.prefix}node"

    @property
    def pod_prefix(self) -> str:
        return f"{self.prefix}p-"

    @property
    def subnet(self) -> str:
        return f"10.88.{self.index}.0/24"

    @property
    def gateway(self) -> str:
        return f"10.88.{self.index}.1"

    @property
    def cni_log(self) -> Path:
        return self.dir / "cni-calls.jsonl"

    def setup(self) -> KubeletNode:
        self.netnses = nets.NetnsSet(self.prefix)
        ns = self.netnses.netns("node")
        nets.add_bridge("br0", ns)
        nets.add_address("br0", f"{self.gateway}/24", ns)
        install_plugins(self.dir / "bin")
        conf = self.dir / "net.d"
        conf.mkdir()
        # A file that sorts later and one that is not a config: neither is used.
        (conf / "99-other.conflist").write_text(json.dumps({
            "cniVersion": "1.1.0", "name": "other", "plugins": [{"type": "nonexistent"}]}))
        (conf / "README").write_text("not a CNI config\n")
        (conf / "10-test.conflist").write_text(json.dumps({
            "cniVersion": "1.1.0", "name": "testnet",
            "plugins": [
                {"type": "test-veth", "bridge": "br0", "subnet": self.subnet,
                 "ipamDir": str(self.dir / "ipam"), "logFile": str(self.cni_log),
                 "failPodPrefix": self.fail_pod_prefix,
                 "failMessage": "test plugin says no"},
                {"type": "test-chain", "logFile": str(self.cni_log)},
            ]}))
        return self

    def config(self, **overrides: Any) -> KubeletConfig:
        cfg = KubeletConfig(
            node_name=self.name, kubeconfig=str(self.cp.kubeconfig),
            cni_conf_dir=self.dir / "net.d", cni_bin_dirs=[self.dir / "bin"],
            pod_netns_prefix=self.pod_prefix,
            state_dir=self.state_dir or self.dir / "kubelet",
            node_ip=self.gateway, node_netns=self.netns, keep_pods=self.keep_pods,
            lease_renew_interval=1.0, node_status_interval=2.0, max_grace_period=3.0,
            restart_backoff=0.5, restart_backoff_max=2.0, sandbox_backoff=0.5,
            sandbox_backoff_max=2.0)
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg

    def start_kubelet(self, **overrides: Any) -> NetnsKubelet:
        self.kubelet = NetnsKubelet(self.config(**overrides)).start()
        return self.kubelet

    def stop_kubelet(self) -> None:
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None

    def cni_calls(self, command: str | None = None, plugin: str | None = None,
                  pod: str | None = None) -> list[dict[str, Any]]:
        if not self.cni_log.exists():
            return []
        out = []
        for line in self.cni_log.read_text().splitlines():
            c = json.loads(line)
            if command and c["command"] != command:
                continue
            if plugin and c["plugin"] != plugin:
                continue
            if pod and f"K8S_POD_NAME={pod};" not in c["env"].get("CNI_ARGS", ""):
                continue
            out.append(c)
        return out

    def pod_namespaces(self) -> list[str]:
        return nets.list_netns(self.pod_prefix)

    def our_processes(self) -> dict[int, str]:
        """Processes started from this node's directory (the containers' shims,
        whose command line names their exit file there) and their descendants:
        pid -> "starttime cmdline"."""
        return process_tree(str(self.dir))

    def teardown(self) -> None:
        try:
            self.stop_kubelet()
        finally:
            api = self.cp.api_client()
            try:
                for path in (f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/"
                             f"leases/{self.name}", f"/api/v1/nodes/{self.name}"):
                    with contextlib.suppress(client.ApiException):
                        request(api, "DELETE", path)
            finally:
                api.close()
            kill_marked(str(self.dir))
            for ns in self.pod_namespaces():
                with contextlib.suppress(Exception):
                    nets.delete_netns(ns)
            if self.netnses is not None:
                self.netnses.cleanup()
            shutil.rmtree(self.dir, ignore_errors=True)


def _procs() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, starttime, cmdline) of every live process."""
    out: dict[int, tuple[int, str, str]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if fields[0] == "Z":
            continue
        out[int(p.name)] = (int(fields[1]), fields[19], cmd)
    return out


def process_tree(marker: str) -> dict[int, str]:
    procs = _procs()
    found = {pid for pid, (_, _, cmd) in procs.items() if marker in cmd and pid != os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return {pid: f"{procs[pid][1]} {procs[pid][2]}" for pid in found}


def still_running(procs: dict[int, str]) -> dict[int, str]:
    now = _procs()
    return {pid: v for pid, v in procs.items()
            if pid in now and now[pid][1] == v.split(" ", 1)[0]}


def kill_marked(marker: str) -> None:
    """Last resort for a failed test: SIGKILL what still runs from `marker`."""
    for pid in process_tree(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@contextlib.contextmanager
def kubelet_node(cp: KubeControlPlane, prefix: str, index: int = 1, start: bool = True,
                 **kw: Any) -> Iterator[KubeletNode]:
    node = KubeletNode(cp, prefix, index, **kw)
    try:
        node.setup()
        if start:
            node.start_kubelet()
        yield node
    finally:
        node.teardown()


# --- API helpers ----------------------------------------------------------------

class Kube:
    """Raw-JSON access to the test cluster."""

    def __init__(self, cp: KubeControlPlane) -> None:
        self.api = cp.api_client()

    def close(self) -> None:
        self.api.close()

    def get(self, path: str) -> dict[str, Any]:
        return request(self.api, "GET", path)

    def create_namespace(self) -> str:
        name = f"kt-{secrets.token_hex(3)}"
        request(self.api, "POST", "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        # Pods are admitted only once the namespace's default ServiceAccount exists.
        eventually(lambda: self.get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                   what=f"default ServiceAccount in {name}")
        return name

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(client.ApiException):
            request(self.api, "DELETE", f"/api/v1/namespaces/{name}")

    def create_pod(self, ns: str, pod: dict[str, Any]) -> dict[str, Any]:
        return request(self.api, "POST", f"/api/v1/namespaces/{ns}/pods", pod)

    def pod(self, ns: str, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/namespaces/{ns}/pods/{name}")

    def pod_gone(self, ns: str, name: str) -> bool:
        try:
            self.pod(ns, name)
            return False
        except client.ApiException as e:
            if e.status == 404:
                return True
            raise

    def delete_pod(self, ns: str, name: str, grace: int | None = None) -> None:
        body = {"gracePeriodSeconds": grace} if grace is not None else None
        request(self.api, "DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", body)

    def events(self, ns: str, name: str) -> list[dict[str, Any]]:
        items = self.get(f"/api/v1/namespaces/{ns}/events")["items"]
        return [e for e in items if e["involvedObject"].get("name") == name]

    def wait_pod(self, ns: str, name: str, pred: Callable[[dict[str, Any]], bool],
                 what: str, timeout: float = 90) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            p = self.pod(ns, name)
            return p if pred(p) else None
        pod: dict[str, Any] = eventually(check, timeout, f"pod {ns}/{name} {what}")
        return pod


def condition(obj: dict[str, Any], type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return str(c.get("status"))
    return None


def running_ready(p: dict[str, Any]) -> bool:
    return p["status"].get("phase") == "Running" and condition(p, "Ready") == "True"


def container_status(p: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    for c in p["status"].get("containerStatuses") or []:
        if name is None or c["name"] == name:
            return dict(c)
    raise KeyError(name)


def pod_manifest(name: str, node: str, containers: list[dict[str, Any]],
                 **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"t": name}},
            "spec": {"nodeName": node, "containers": containers,
                     "terminationGracePeriodSeconds": 2, **spec}}


def netexec(name: str = "app", http_port: int = 8080, udp_port: int = 8081,
            **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": AGNHOST,
            "args": ["netexec", f"--http-port={http_port}", f"--udp-port={udp_port}"],
            **extra}


def netns_run(netns: str, *argv: str, timeout: float = 20) -> str:
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True,
                          text=True, check=True, timeout=timeout).stdout


def curl(netns: str, url: str) -> str:
    return netns_run(netns, "curl", "-sS", "--max-time", "5", url)
