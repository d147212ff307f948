"""`ovnkube-local`: a multi-node Kubernetes cluster with OVN networking, made
of network namespaces on this machine (no Docker)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from localcluster import cluster as lc
from localcluster.kube import kube_bin


def strip(xs: list[str]) -> list[str]:
    return xs[1:] if xs[:1] == ["--"] else xs


def _progress(msg: str) -> None:
    print(msg, flush=True)


def _exec_in(netns: str, cmd: list[str]) -> int:
    if not cmd:
        print("ovnkube-local: give a command after --", file=sys.stderr)
        return 2
    os.execvp("ip", ["ip", "netns", "exec", netns, *cmd])
    return 127  # not reached


def _pod_netns(c: lc.Cluster, target: str) -> str:
    ns, _, name = target.partition("/")
    if not name:
        ns, name = "default", ns
    out = c.kubectl("get", "pod", "-n", ns, name, "-o",
                    "jsonpath={.spec.nodeName} {.metadata.uid}")
    parts = out.split()
    if len(parts) != 2:
        raise LookupError(f"pod {ns}/{name} is not scheduled to a node yet")
    node, uid = parts
    state_dir = c.s.node_dir(node) / "kubelet"
    from localcluster.kubelet import pod_netns_name
    return pod_netns_name(state_dir, uid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ovnkube-local", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create a cluster")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--name", default="ovnk")
    for cmd in ("down", "status", "kubeconfig"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--name", default="ovnk")
    for cmd in ("exec", "node-exec"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--name", default="ovnk")
        sp.add_argument("target", help="NAMESPACE/POD" if cmd == "exec" else "NODE")
        sp.add_argument("command", nargs=argparse.REMAINDER)
    for cmd in ("nbctl", "sbctl", "kubectl"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--name", default="ovnk")
        sp.add_argument("args", nargs=argparse.REMAINDER)
    sp = sub.add_parser("vsctl")
    sp.add_argument("--name", default="ovnk")
    sp.add_argument("--node", required=True)
    sp.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING)
    try:
        if a.cmd == "up":
            t0 = time.monotonic()
            c = lc.Cluster.create(a.name, a.nodes, _progress)
            print(f"up in {time.monotonic() - t0:.1f}s\n"
                  f"kubeconfig: {c.s.kubeconfig}\n"
                  f"  export KUBECONFIG={c.s.kubeconfig}\n"
                  f"tear down: ovnkube-local down --name {a.name}")
            return 0
        if a.cmd == "down":
            try:
                c = lc.load(a.name)
            except LookupError:
                left = lc.nets.list_netns(lc.netns_prefix(a.name))
                for ns in left:
                    lc.nets.delete_netns(ns)
                print(f"no cluster {a.name!r}" + (f"; removed {len(left)} namespaces"
                                                  if left else ""))
                return 0
            c.down()
            print(f"cluster {a.name!r} removed")
            return 0
        c = lc.load(a.name)
        if a.cmd == "status":
            print(f"cluster {a.name}: nodes {', '.join(c.s.nodes)}; underlay {c.s.underlay}")
            for name, ns, st in c.status():
                print(f"  {name:24} {ns:18} {st}")
            print(c.kubectl("get", "nodes", "-o", "wide", timeout=20))
            return 0 if all(st == "running" for _, _, st in c.status()) else 1
        if a.cmd == "kubeconfig":
            print(c.s.kubeconfig)
            return 0
        if a.cmd == "exec":
            return _exec_in(_pod_netns(c, a.target), strip(a.command))
        if a.cmd == "node-exec":
            if a.target not in c.s.nodes:
                raise LookupError(f"no node {a.target!r}; nodes: {', '.join(c.s.nodes)}")
            return _exec_in(c.s.node_netns(a.target), strip(a.command))
        if a.cmd == "nbctl":
            os.execvp("ovn-nbctl", ["ovn-nbctl", f"--db=unix:{c.s.nb_sock}", *strip(a.args)])
        if a.cmd == "sbctl":
            os.execvp("ovn-sbctl", ["ovn-sbctl", f"--db=unix:{c.s.sb_sock}", *strip(a.args)])
        if a.cmd == "vsctl":
            if a.node not in c.s.ovs_nodes:
                raise LookupError(f"no node {a.node!r}; nodes: {', '.join(c.s.nodes)}")
            db = f"unix:{c.s.ovs_nodes[a.node]}/db.sock"
            os.execvp("ovs-vsctl", ["ovs-vsctl", f"--db={db}", *strip(a.args)])
        if a.cmd == "kubectl":
            kubectl = kube_bin("kubectl")
            os.execv(kubectl, [kubectl, f"--kubeconfig={c.s.kubeconfig}", *strip(a.args)])
    except (LookupError, ValueError, FileExistsError, TimeoutError, RuntimeError) as e:
        print(f"ovnkube-local: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
