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
import time
from pathlib import Path
from typing import TYPE_CHECKING

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
    from localcluster.procs import run
    dbname = "OVN_Northbound" if which == "nb" else "OVN_Southbound"
    out: dict[str, str] = {}
    for rec in c.s.daemons:
        if not rec.name.startswith(f"ovn{which}_db-"):
            continue
        ctl = Path(c.s.dir) / "central" / f"{rec.name}.ctl"
        st = run(["ovs-appctl", "-t", str(ctl), "cluster/status", dbname], check=False,
                 timeout=10) if pid_alive(rec.pid) else ""
        role = next((ln.split(":", 1)[1].strip() for ln in st.splitlines()
                     if ln.startswith("Role:")), "")
        out[rec.name] = role if "Status: cluster member" in st else ""
    if not out:
        raise LookupError(f"cluster {c.s.name!r} has no raft members (up --db-replicas 3)")
    return out
