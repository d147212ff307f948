"""A whole cluster out of network namespaces: what `ovnkube-local up` builds.

    root namespace (loopback only)
      127.0.0.1:<port>  --portforward-->  <cp>:6443
    <prefix>-ul     underlay: Linux bridge br-ul, 172.18.<i>.1/24 (the nodes' next hop)
    <prefix>-cp     control plane: etcd, kube-apiserver, kube-controller-manager,
                    kube-scheduler, OVN NB/SB + ovn-northd, ovnkube master; 172.18.<i>.2;
                    and, as in kind, the node <name>-control-plane (tainted NoSchedule)
                    with everything a worker has
    <prefix>-<node> per node: ovsdb-server, ovs-vswitchd (netdev), ovn-controller,
                    ovnkube node (br-ex carries eth0 and the node IP 172.18.<i>.1x),
                    the kubelet and its CRI runtime; each pod gets a namespace

Everything lives under /tmp/ovk-local-<name>/ and in namespaces named
`ovk-<name>-*`; the daemons outlive the `up` command and are found again from
state.json by `down` and `status`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cni import shim
from localcluster import dns, nodefs, realkubelet
from localcluster import netns as nets
from localcluster.cri.cleanup import created_mountpoints, kill_containers, remove_mountpoints
from localcluster.kube import KubeControlPlane, kube_bin
from localcluster.ovn import OvnCentral, OvnController, OvsNode
from localcluster.procs import Daemon, pid_alive, run, stop_pid
from localcluster.realkubelet import restore_kernel_tunables, save_kernel_tunables
from localcluster.state import (
    BASE,
    CLUSTER_CIDR,
    SERVICE_CIDR,
    DaemonRecord,
    State,
    check_name,
    cluster_dir,
    netns_prefix,
    node_names,
    used_indexes,
)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
Progress = Callable[[str], None]
#: ovn: this project's network, brought up by `up`; none: nodes without a
#: network plugin (NotReady), for one installed later, e.g. with the Helm chart.
CNIS = ("ovn", "none")


class Cluster:
    def __init__(self, state: State, progress: Progress | None = None) -> None:
        self.s = state
        self.progress = progress or (lambda msg: None)
        self._t0 = time.monotonic()

    # --- bring-up ------------------------------------------------------------
    @classmethod
    def create(cls, name: str, nodes: int, progress: Progress | None = None,
               retain: bool = False, cni: str = "ovn", db_replicas: int = 1) -> Cluster:
        check_name(name)
        if db_replicas not in (1, 3, 5):
            raise ValueError(f"--db-replicas {db_replicas}: want 1, 3 or 5")
        if db_replicas > 1 and cni != "ovn":
            raise ValueError("--db-replicas is for the OVN central `up` brings; with --cni none "
                             "the chart's ovn.dbReplicas sets it")
        if not 1 <= nodes <= 50:
            raise ValueError(f"--nodes {nodes}: want 1 to 50")
        if cni not in CNIS:
            raise ValueError(f"--cni {cni!r}: want one of {', '.join(CNIS)}")
        d = cluster_dir(name)
        if (d / "state.json").exists():
            raise FileExistsError(f"cluster {name!r} exists; `ovnkube-local down --name {name}` "
                                  "first")
        stale = nets.list_netns(netns_prefix(name))
        if stale:
            raise FileExistsError(f"namespaces of an earlier cluster {name!r} remain: "
                                  f"{', '.join(stale)}; run `ovnkube-local down --name {name}`")
        index = next(i for i in range(0, 250) if i not in used_indexes())
        d.mkdir(parents=True, exist_ok=True)
        state = State(name, index, node_names(name, nodes), str(d),
                      control_plane=f"{name}-control-plane", cni=cni,
                      db_replicas=db_replicas)
        state.save()
        c = cls(state, progress)
        try:
            c._up()
        except BaseException:
            if retain:
                c.step(f"bring-up failed; kept for a look (`ovnkube-local down --name {name}`)")
            else:
                c.step("bring-up failed; removing what was made")
                c.down()
            raise
        return c

    def step(self, msg: str) -> None:
        self.progress(f"[{time.monotonic() - self._t0:5.1f}s] {msg}")

    def _record(self, d: Daemon, node: str = "") -> None:
        self.s.daemons.append(DaemonRecord(d.name, d.pid, d.netns, str(d.log_path),
                                           list(d.argv), dict(d.env), node))
        self.s.save()

    def _ns(self, suffix: str) -> str:
        name = nets.create_netns(self.s.netns(suffix))
        self.s.namespaces.append(name)
        self.s.save()
        return name

    def _up(self) -> None:
        s = self.s
        base = Path(s.dir)
        self.step(f"underlay {s.underlay} (namespace {s.netns('ul')})")
        ul = self._ns("ul")
        nets.add_bridge("br-ul", ul)
        nets.add_address("br-ul", f"{s.ip(1)}/24", ul)
        # The userspace datapath drops packets whose checksum was left to offload.
        run(["ethtool", "-K", "br-ul", "tx", "off"], netns=ul, check=False)

        self.step("control plane namespace")
        cp = self._ns("cp")
        self._uplink(ul, cp, "v-cp", s.cp_ip)

        if s.cni == "ovn":
            self.step("OVN central: NB, SB, ovn-northd" + (
                f" (NB and SB raft clusters of {s.db_replicas})" if s.db_replicas > 1 else ""))
            central = OvnCentral(base / "central", netns=cp, tcp_host=s.cp_ip,
                                 replicas=s.db_replicas)
            central.start()
            for d in central.daemons.daemons:
                self._record(d)

        self.step("Kubernetes control plane: etcd, kube-apiserver, controller-manager, scheduler")
        kube = KubeControlPlane(base / "kube", cp, s.cp_ip, controllers=["*"], scheduler=True)
        try:
            kube.start()
        finally:
            for d in kube.daemons.daemons:
                self._record(d)
        s.api_port = kube.local_port
        s.save()

        if s.cni == "ovn":
            self._master()
        # The control plane is a node of the pod network, as in kind: the
        # apiserver reaches pods through its own management port.
        nets.add_route("0.0.0.0/0", gateway=s.ip(1), ns=cp)
        for node in s.all_nodes:
            self.step(f"node {node}: " + ("OVS, ovn-controller, ovnkube node, kubelet"
                                          if s.cni == "ovn" else "kubelet"))
            self._node_up(node, ul)
        self.step(f"cluster DNS: CoreDNS in kube-system, Service kube-dns {dns.DNS_SERVICE_IP}")
        run([kube_bin("kubectl"), f"--kubeconfig={s.kubeconfig}", "apply", "-f", "-"],
            input=dns.manifest_json())
        if s.cni == "none":
            self.step("waiting for the nodes to register (NotReady: no network plugin)")
            self.wait_nodes(timeout=180, ready=False)
        else:
            self.step("waiting for nodes to be Ready")
            self.wait_nodes(timeout=180)
        # The kubelet may not set node-role labels itself (kubeadm sets them too).
        self.kubectl("label", "node", s.control_plane, "--overwrite",
                     "node-role.kubernetes.io/control-plane=",
                     "node.kubernetes.io/exclude-from-external-load-balancers=")
        if s.cni == "ovn":
            self.step("waiting for CoreDNS")
            self.kubectl("-n", "kube-system", "rollout", "status", "deployment/coredns",
                         "--timeout=180s", timeout=190)
        self.step(f"cluster {s.name!r} is up")

    def _master(self) -> None:
        s = self.s
        self.step("ovnkube master")
        master = Daemon("ovnkube-master", [
            sys.executable, "-m", "ovnkube.cli", "master", f"--nb-address={s.nb_unix}",
            f"--k8s-kubeconfig={s.inner_kubeconfig}", f"--cluster-subnets={CLUSTER_CIDR}",
            f"--k8s-service-cidr={SERVICE_CIDR}", "--lease-namespace=kube-system",
        ], Path(s.dir) / "ovnkube-master.log", netns=s.netns("cp"),
            env={"PYTHONPATH": str(ROOT)}).start()
        self._record(master)

    def _uplink(self, ul: str, ns: str, ul_end: str, ip: str) -> None:
        nets.add_veth(ul_end, "eth0", ul, ns)
        nets.set_master(ul_end, "br-ul", ul)
        nets.add_address("eth0", f"{ip}/24", ns)
        run(["ethtool", "-K", ul_end, "tx", "off"], netns=ul, check=False)
        run(["ethtool", "-K", "eth0", "tx", "off"], netns=ns, check=False)

    def _node_up(self, node: str, ul: str) -> None:
        s = self.s
        if node == s.control_plane:
            ns = s.node_netns(node)  # made with the control plane, uplink and all
        else:
            idx = s.nodes.index(node) + 1
            ns = self._ns(f"n{idx}")
            self._uplink(ul, ns, f"v-n{idx}", s.node_ip(node))
            nets.add_route("0.0.0.0/0", gateway=s.ip(1), ns=ns)
        d = s.node_dir(node)
        ovs = None
        if s.cni == "ovn":
            ovs = OvsNode(d / "ovs", netns=ns)
            ovs.start(bridge=None)
            s.ovs_nodes[node] = str(ovs.workdir)
            for dm in ovs.daemons.daemons:
                self._record(dm, node)
            cni_bin, cni_conf = d / "cni" / "bin", d / "cni" / "net.d"
        else:  # where a plugin's installer writes them on a real node
            cni_bin, cni_conf = Path(shim.DEFAULT_BIN_DIR), Path(shim.DEFAULT_CONF_DIR)
        save_kernel_tunables()
        # The kubelet, runtime and pods see the node's own /etc, /opt, /var, /run.
        mount_ns = nodefs.create(self.node_mount_ns(node).parent, node, d / "fs")
        runtime, kubelet = realkubelet.node_daemons(
            node, ns, s.node_ip(node), d, s.inner_kubeconfig,
            Path(s.dir) / "kube" / "pki" / "ca.crt", cni_conf, cni_bin,
            s.pod_netns_prefix(node), cluster_dns=[dns.DNS_SERVICE_IP],
            control_plane=node == s.control_plane, mount_ns=mount_ns)
        self._record(runtime.start(), node)
        sock = realkubelet.cri_socket_path(d)
        runtime.wait_until(sock.exists, timeout=60, what=f"serving on {sock}")
        self._record(kubelet.start(), node)
        if ovs is not None:
            self._network_agents(node, ns, ovs, cni_bin, cni_conf)

    def _network_agents(self, node: str, ns: str, ovs: OvsNode, cni_bin: Path,
                        cni_conf: Path) -> None:
        s, d = self.s, self.s.node_dir(node)
        agent = Daemon("ovnkube-node", [
            sys.executable, "-m", "ovnkube.cli", "node", f"--node-name={node}",
            f"--k8s-kubeconfig={s.inner_kubeconfig}", f"--sb-address={s.sb_address}",
            f"--ovs-db={ovs.db_unix}", f"--ovs-rundir={ovs.workdir}", "--datapath-type=netdev",
            f"--encap-ip={s.node_ip(node)}", "--gateway-interface=eth0",
            f"--gateway-nexthop={s.ip(1)}", f"--cni-bin-dir={cni_bin}",
            f"--cni-conf-dir={cni_conf}", f"--cni-socket={d / 'cni.sock'}",
            f"--cni-log-file={d / 'cni.log'}", f"--cluster-subnets={CLUSTER_CIDR}",
            f"--k8s-service-cidr={SERVICE_CIDR}",
        ], d / "ovnkube-node.log", netns=ns, env={"PYTHONPATH": str(ROOT)}).start()
        self._record(agent, node)
        ctl = OvnController(ovs, s.sb_address, node, s.node_ip(node), configure=False)
        ctl.start()
        for dm in ctl.daemons.daemons:
            self._record(dm, node)

    # --- queries -------------------------------------------------------------
    def pod_netns(self, node: str, uid: str) -> str:
        """The network namespace of pod `uid` on `node` (its runtime's record)."""
        from localcluster.cri.records import pod_netns
        return pod_netns(self.s.node_dir(node) / "cri", uid)

    def node_mount_ns(self, node: str) -> Path:
        """The file the node's mount namespace is pinned on (localcluster.nodefs)."""
        return Path(self.s.dir) / "mntns" / node

    def vsctl_argv(self, node: str, *args: str) -> list[str]:
        """ovs-vsctl against the node's Open vSwitch: ours, or the one a network
        installed later runs in the node's own /run (reached from inside the
        node: a unix socket is not reached through an overlay's upper dir)."""
        if node in self.s.ovs_nodes:
            return ["ovs-vsctl", f"--db=unix:{Path(self.s.ovs_nodes[node]) / 'db.sock'}", *args]
        return [sys.executable, "-m", "localcluster.nsexec", "--mount",
                str(self.node_mount_ns(node)), self.s.node_netns(node),
                "ovs-vsctl", "--db=unix:/run/openvswitch/db.sock", *args]

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        return run([kube_bin("kubectl"), f"--kubeconfig={self.s.kubeconfig}", *args],
                   timeout=timeout)

    def nbctl(self, *args: str) -> str:
        if self.s.cni == "ovn":
            return run(["ovn-nbctl", f"--db={self.s.nb_unix}", *args])
        # A network installed later: its databases listen on the control plane
        # (a raft member there may follow; it relays writes to the leader).
        return run(["ovn-nbctl", "--no-leader-only", f"--db={self.s.nb_address}", *args],
                   netns=self.s.netns("cp"))

    def sbctl(self, *args: str) -> str:
        if self.s.cni == "ovn":
            return run(["ovn-sbctl", f"--db={self.s.sb_unix}", *args])
        return run(["ovn-sbctl", "--no-leader-only", f"--db={self.s.sb_address}", *args],
                   netns=self.s.netns("cp"))

    def vsctl(self, node: str, *args: str) -> str:
        return run(self.vsctl_argv(node, *args), env={"PYTHONPATH": str(ROOT)})

    def node_readiness(self) -> dict[str, bool]:
        """Each registered node: whether its Ready condition is True."""
        out = json.loads(self.kubectl("get", "nodes", "-o", "json", timeout=20))
        return {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in n["status"].get("conditions", []))
                for n in out["items"]}

    def wait_nodes(self, timeout: float, ready: bool = True) -> None:
        """Every node registered and, with `ready`, Ready with a subnet."""
        deadline = time.monotonic() + timeout
        want = set(self.s.all_nodes)
        while True:
            self.check_daemons()
            out = run([kube_bin("kubectl"), f"--kubeconfig={self.s.kubeconfig}", "get", "nodes",
                       "-o", "jsonpath={range .items[*]}{.metadata.name} "
                       "{.status.conditions[?(@.type==\"Ready\")].status} "
                       "{.metadata.annotations.k8s\\.ovn\\.org/node-subnets}{\"\\n\"}{end}"],
                      check=False, timeout=20)
            seen = {ln.split()[0] for ln in out.splitlines()
                    if not ready or (len(ln.split()) >= 3 and ln.split()[1] == "True")}
            if want <= seen:
                return
            if time.monotonic() > deadline:
                what = "Ready with a subnet" if ready else "registered"
                raise TimeoutError(f"nodes not {what} after {timeout:.0f}s: "
                                   f"{', '.join(sorted(want - seen))}; see logs in {self.s.dir}")
            time.sleep(0.5)

    def check_daemons(self) -> None:
        dead = [d for d in self.s.daemons if not pid_alive(d.pid)]
        if dead:
            from localcluster.procs import log_tail
            d = dead[0]
            raise RuntimeError(f"{d.name} (pid {d.pid}) exited; last log lines:\n"
                               f"{log_tail(Path(d.log))}")

    def status(self) -> list[tuple[str, str, str]]:
        rows = []
        for d in self.s.daemons:
            rows.append((d.name, d.netns or "-", "running" if pid_alive(d.pid) else "DEAD"))
        return rows

    # --- tear-down -----------------------------------------------------------
    def down(self) -> None:
        s = self.s
        by_name: dict[str, list[DaemonRecord]] = {}
        for d in s.daemons:
            by_name.setdefault(d.name, []).append(d)
        # Kubelets first: they stop pods and run CNI DEL while the agents still serve.
        for d in by_name.get("kubelet", []):
            stop_pid(d.pid, timeout=30)
        # The real kubelet leaves its pods running (as on a real node); their
        # containers outlive the runtime, so they go by the runtime's records.
        mountpoints: set[str] = set()
        for d in by_name.get("cri-runtime", []):
            stop_pid(d.pid, timeout=10)
        for node in s.all_nodes:
            kill_containers(s.node_dir(node) / "cri")
            # those in a node's overlays go with its directory
            mountpoints |= {p for p in created_mountpoints(s.node_dir(node) / "cri")
                            if not nodefs.overlaid(p)}
        _remove_log_links(Path(s.dir))
        for node, ovs_dir in s.ovs_nodes.items():
            ctl = Path(ovs_dir) / "ovs-vswitchd.ctl"
            if ctl.exists():
                run(["ovs-appctl", "-t", str(ctl), "exit", "--cleanup"],
                    netns=s.node_netns(node), check=False, timeout=15)
        for d in reversed(s.daemons):
            stop_pid(d.pid)
        from localcluster.sweep import our_pids
        for pid in our_pids(marker=s.dir):
            stop_pid(pid, timeout=3)
        # Pod namespaces a kubelet could not remove, then ours; return only
        # when nothing of the cluster is left, so `down && up` works.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = [p for p in our_pids(marker=s.dir) if pid_alive(p)]
            for pid in live:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            left = nets.list_netns(netns_prefix(s.name))
            for ns in left:
                with contextlib.suppress(Exception):
                    nets.delete_netns(ns)
            if not live and not left:
                break
            time.sleep(0.1)
        unmount_under(Path(s.dir))
        shutil.rmtree(s.dir, ignore_errors=True)
        if not any(BASE.glob("ovk-local-*/state.json")):
            # The last cluster: what the kubelets changed outside their dirs goes.
            remove_mountpoints(mountpoints)
            restore_kernel_tunables()


def unmount_under(d: Path) -> None:
    """Unmount what the kubelet mounted under `d` (secret, projected and
    emptyDir-on-memory volumes are tmpfs mounts in the host's namespace)."""
    prefix = str(d.resolve()) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    # Deepest first; lazily, so a mount still held by a dying process goes too.
    for mp in sorted((m for m in points if m.startswith(prefix)), key=len, reverse=True):
        run(["umount", "-l", mp], check=False)


def _remove_log_links(cluster: Path) -> None:
    """The kubelet links each container's log into /var/log/containers."""
    links = Path("/var/log/containers")
    for link in links.glob("*.log") if links.is_dir() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and str(cluster) in os.readlink(link):
                link.unlink()


def load(name: str) -> Cluster:
    return Cluster(State.load(check_name(name)))
