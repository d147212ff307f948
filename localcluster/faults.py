"""Faults on purpose: kill a local cluster's daemons and start them again.

`ovnkube-local kill|start|restart DAEMON [--node NODE]` and the chaos tests
use this. A daemon is found by its name (as `ovnkube-local status` lists it)
and, for the daemons every node runs, its node; it is started again from what
`up` recorded (argv, environment, namespace, log), so it comes back exactly as
`up` made it. Pods are not daemons: each container runs in its own session,
so killing a node's kubelet or runtime leaves its pods running, as on a real
node; `restart_node` is the power cut (the pods' processes go too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from localcluster import realkubelet
from localcluster.procs import Daemon, group_alive, pid_alive
from localcluster.state import DaemonRecord

if TYPE_CHECKING:
    from localcluster.cluster import Cluster

#: the line `start` writes into a daemon's log before starting it again
RESTART_MARK = "=== started again by ovnkube-local at"
#: daemons every node runs, in the order a node starts them
NODE_DAEMONS = ("ovsdb-server", "ovs-vswitchd", "cri-runtime", "kubelet", "ovnkube-node",
                "ovn-controller")


def find(c: Cluster, name: str, node: str | None = None) -> DaemonRecord:
    """The record of daemon `name` (of `node` for a node's daemons)."""
    s = c.s
    matches = [d for d in s.daemons if d.name == name and (node is None or d.node == node)]
    if node is not None and node not in s.all_nodes:
        raise LookupError(f"no node {node!r}; nodes: {', '.join(s.all_nodes)}")
    if not matches:
        names = sorted({d.name for d in s.daemons})
        raise LookupError(f"no daemon {name!r}" + (f" on node {node!r}" if node else "")
                          + f"; daemons: {', '.join(names)}")
    if len(matches) > 1:
        nodes = sorted(d.node or "(control plane)" for d in matches)
        raise LookupError(f"{name!r} runs on several nodes ({', '.join(nodes)}): give --node")
    return matches[0]


def kill(c: Cluster, rec: DaemonRecord, sig: int = signal.SIGKILL, timeout: float = 30.0
         ) -> None:
    """Signal the daemon's process group; return once none of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(rec.pid, sig)
    deadline = time.monotonic() + timeout
    while pid_alive(rec.pid) or group_alive(rec.pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{rec.name} (pid {rec.pid}) still running {timeout:.0f}s "
                               f"after signal {signal.Signals(sig).name}")
        time.sleep(0.05)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(rec.pid, os.WNOHANG)


def start(c: Cluster, rec: DaemonRecord) -> DaemonRecord:
    """Start a stopped daemon again from its record (its log is appended to)."""
    if pid_alive(rec.pid):
        raise RuntimeError(f"{rec.name} (pid {rec.pid}) is running; kill it first")
    if not rec.argv:
        raise RuntimeError(f"{rec.name}: this cluster's state has no command line for it "
                           "(made by an older ovnkube-local); recreate the cluster")
    with open(rec.log, "a") as f:  # where a reader of the log sees the restart
        f.write(f"{RESTART_MARK} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    d = Daemon(rec.name, list(rec.argv), Path(rec.log), netns=rec.netns,
               env=dict(rec.env)).start()
    rec.pid = d.pid
    c.s.save()
    return rec


def restart(c: Cluster, rec: DaemonRecord, sig: int = signal.SIGKILL, down_for: float = 0.0
            ) -> DaemonRecord:
    kill(c, rec, sig)
    if down_for:
        time.sleep(down_for)
    return start(c, rec)


def node_daemons(c: Cluster, node: str) -> list[DaemonRecord]:
    s = c.s
    if node not in s.all_nodes:
        raise LookupError(f"no node {node!r}; nodes: {', '.join(s.all_nodes)}")
    recs = [d for d in s.daemons if d.node == node]
    return sorted(recs, key=lambda d: NODE_DAEMONS.index(d.name)
                  if d.name in NODE_DAEMONS else len(NODE_DAEMONS))


def start_another(c: Cluster, rec: DaemonRecord, suffix: str) -> DaemonRecord:
    """A second instance of a daemon (a standby master, say), recorded so
    `down` stops it too; its log beside the first's, `suffix` in its name."""
    log = Path(rec.log)
    new = DaemonRecord(f"{rec.name}-{suffix}", 0, rec.netns,
                       str(log.with_name(f"{log.stem}-{suffix}{log.suffix}")),
                       list(rec.argv), dict(rec.env), rec.node)
    d = Daemon(new.name, list(new.argv), Path(new.log), netns=new.netns,
               env=dict(new.env)).start()
    new.pid = d.pid
    c.s.daemons.append(new)
    c.s.save()
    return new


def raft_roles(c: Cluster, which: str) -> dict[str, str]:
    """Each raft member of the NB ("nb") or SB ("sb") of a cluster made with
    --db-replicas: daemon name -> its role ("leader", "follower"; "" if it
    does not answer or has not joined)."""
    from localcluster.ovn import raft_role
    out = {rec.name: raft_role(Path(c.s.dir) / "central" / f"{rec.name}.ctl", which)
           if pid_alive(rec.pid) else ""
           for rec in c.s.daemons if rec.name.startswith(f"ovn{which}_db-")}
    if not out:
        raise LookupError(f"cluster {c.s.name!r} has no raft members (up --db-replicas 3)")
    return out


#: links of a node that live only as long as its processes do: the userspace
#: datapath's tap devices (bridges, management port, ovs-netdev)
_VOLATILE_LINKS = ("br-int", "br-ex", "ovs-netdev", "ovn-k8s-mp0")


def restart_node(c: Cluster, node: str, down_for: float = 2.0) -> list[DaemonRecord]:
    """The power cut of a worker: every process of the node goes at once (its
    daemons and its pods' containers), and with them what a reboot takes: the
    pods' network namespaces and veths, the datapath's tap devices, the
    node's nftables ruleset. Then the node starts again, daemons in the order
    `up` started them; its files (OVS database, kubelet and runtime state)
    remain, as a disk does."""
    from localcluster import netns as nets
    from localcluster.cri.cleanup import kill_containers
    from localcluster.procs import run
    if node == c.s.control_plane:
        raise ValueError(f"{node} is the control plane (it runs OVN central and the "
                         "apiserver too); restart a worker")
    recs = node_daemons(c, node)
    for rec in recs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(rec.pid, signal.SIGKILL)
    kill_containers(c.s.node_dir(node) / "cri")
    for rec in recs:
        kill(c, rec)
    for ns in nets.list_netns(c.s.pod_netns_prefix(node)):
        nets.delete_netns(ns)
    ns = c.s.node_netns(node)
    for link in _VOLATILE_LINKS:
        if nets.link_index(link, ns) is not None:
            nets.delete_link(link, ns)
    run(["nft", "flush", "ruleset"], netns=ns, check=False)
    time.sleep(down_for)
    # The boot: OVS and the network first, since the node IP lives on br-ex
    # and the kubelet exits if it cannot listen on it; then the runtime,
    # which the kubelet exits without too.
    by_name = {r.name: r for r in recs}
    for name in BOOT_ORDER:
        booting = by_name.get(name)
        if booting is None:
            continue
        start(c, booting)
        if name == "ovn-controller":
            _wait_address(ns, c.s.node_ip(node), booting)
        elif name == "cri-runtime":
            _wait_serving(realkubelet.cri_socket_path(c.s.node_dir(node)), booting)
    for rec in recs:
        if rec.name not in BOOT_ORDER:
            start(c, rec)
    return recs


#: the order a restarted node's daemons start in (restart_node)
BOOT_ORDER = ("ovsdb-server", "ovs-vswitchd", "ovnkube-node", "ovn-controller", "cri-runtime",
              "kubelet")


def _wait_address(ns: str, ip: str, rec: DaemonRecord, timeout: float = 90.0) -> None:
    from localcluster.procs import run
    deadline = time.monotonic() + timeout
    while f" {ip}/" not in run(["ip", "-o", "addr", "show"], netns=ns, check=False):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the node address {ip} did not come back within {timeout:.0f}s "
                               f"(see {rec.log} and the node agent's log)")
        time.sleep(0.2)


def _wait_serving(sock: Path, rec: DaemonRecord, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_UNIX) as s, contextlib.suppress(OSError):
            s.connect(str(sock))
            return
        if not pid_alive(rec.pid) or time.monotonic() > deadline:
            raise RuntimeError(f"{rec.name} is not serving {sock} (see {rec.log})")
        time.sleep(0.1)
