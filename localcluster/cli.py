"""`ovnkube-local`: a multi-node Kubernetes cluster with OVN networking, made
of network namespaces on this machine (no Docker)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time

from localcluster import cluster as lc
from localcluster.kube import kube_bin


def strip(xs: list[str]) -> list[str]:
    return xs[1:] if xs[:1] == ["--"] else xs


#: Commands that hand their arguments to another program, with the options of
#: ours they take first and whether a positional target (pod, node) follows.
PASS_THROUGH: dict[str, tuple[tuple[str, ...], bool]] = {
    "nbctl": (("--name",), False), "sbctl": (("--name",), False),
    "kubectl": (("--name",), False), "vsctl": (("--name", "--node"), False),
    "exec": (("--name",), True), "node-exec": (("--name",), True),
}


class UsageError(ValueError):
    """A command line ovnkube-local cannot read (exit code 2)."""


def split_pass_through(argv: list[str]) -> tuple[str, dict[str, str], str | None, list[str]]:
    """(command, our options, target, the rest as given) for a pass-through
    command: our options come first (`--name X` or `--name=X`), then the target
    if the command takes one, then an optional `--`; everything after is the
    other program's, untouched (`nbctl --bare --columns=name list ...`)."""
    cmd, rest = argv[0], list(argv[1:])
    names, wants_target = PASS_THROUGH[cmd]
    opts: dict[str, str] = {}
    while rest:
        head = rest[0]
        key, eq, value = head.partition("=")
        if key not in names:
            break
        if eq:
            rest = rest[1:]
        elif len(rest) < 2:
            raise UsageError(f"{cmd}: {head} needs a value")
        else:
            value, rest = rest[1], rest[2:]
        opts[key.lstrip("-")] = value
    target = None
    if wants_target:
        if not rest or rest[0] == "--":
            raise UsageError(f"{cmd}: give the {'pod' if cmd == 'exec' else 'node'} first")
        target, rest = rest[0], rest[1:]
    return cmd, opts, target, strip(rest)


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
    return c.pod_netns(node, uid)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ovnkube-local", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create a cluster")
    up.add_argument("--nodes", type=int, default=2)
    up.add_argument("--name", default="ovnk")
    up.add_argument("--retain", action="store_true",
                    help="on a failed bring-up keep what was made, to look at (like kind's)")
    up.add_argument("--db-replicas", type=int, default=1, choices=(1, 3, 5),
                    help="3 or 5: the NB and SB as raft clusters of that many members")
    up.add_argument("--cni", default="ovn", choices=lc.CNIS,
                    help="none: no network plugin, nodes NotReady until one is installed "
                         "(kind's disableDefaultCNI), e.g. with the Helm chart")
    for cmd in ("down", "status", "kubeconfig", "helm-values"):
        sp = sub.add_parser(cmd)
        sp.add_argument("--name", default="ovnk")
    for cmd, what in (("kill", "kill a daemon (SIGKILL unless --signal)"),
                      ("start", "start a killed daemon again, as `up` started it"),
                      ("restart", "kill a daemon and start it again")):
        sp = sub.add_parser(cmd, help=what)
        sp.add_argument("daemon", help="as `status` lists it, e.g. ovnnb_db, ovnkube-node")
        sp.add_argument("--name", default="ovnk")
        sp.add_argument("--node", default=None, help="for the daemons every node runs")
        if cmd != "start":
            sp.add_argument("--signal", default="KILL", help="e.g. TERM (default KILL)")
    for cmd, (names, target) in PASS_THROUGH.items():
        sub.add_parser(cmd, help=f"[{' X] ['.join(names)} X]"
                       + (" TARGET" if target else "") + " [--] ARGS... (passed on as given)")
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(args[:1]) and args[0] in ("-v", "--verbose")
    if verbose:
        args = args[1:]
    if args and args[0] in PASS_THROUGH:
        try:
            return pass_through(*split_pass_through(args))
        except UsageError as e:
            print(f"ovnkube-local: {e}", file=sys.stderr)
            return 2
    a = p.parse_args(args)
    a.verbose = a.verbose or verbose
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.WARNING)
    try:
        if a.cmd == "up":
            t0 = time.monotonic()
            c = lc.Cluster.create(a.name, a.nodes, _progress, retain=a.retain, cni=a.cni,
                                  db_replicas=a.db_replicas)
            print(f"up in {time.monotonic() - t0:.1f}s\n"
                  f"kubeconfig: {c.s.kubeconfig}\n"
                  f"  export KUBECONFIG={c.s.kubeconfig}")
            if a.cni == "none":
                print("no network yet; install one, e.g. this project's chart:\n"
                      "  helm install ovn helm/ovn-kubernetes-py -n ovn-kubernetes "
                      f"--create-namespace -f $(ovnkube-local helm-values --name {a.name})")
            print(f"tear down: ovnkube-local down --name {a.name}")
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
            print(f"cluster {a.name}: nodes {', '.join(c.s.all_nodes)}; "
                  f"underlay {c.s.underlay}")
            for name, ns, st in c.status():
                print(f"  {name:24} {ns:18} {st}")
            if c.s.cni == "none":  # the network runs as pods (the Helm chart's)
                print(c.kubectl("get", "pods", "-A", "-o", "wide", "-l",
                                "app in (ovnkube-db,ovnkube-master,ovs-node,ovnkube-node)",
                                timeout=20))
            print(c.kubectl("get", "nodes", "-o", "wide", timeout=20))
            return 0 if all(st == "running" for _, _, st in c.status()) else 1
        if a.cmd == "kubeconfig":
            print(c.s.kubeconfig)
            return 0
        if a.cmd in ("kill", "start", "restart"):
            from localcluster import faults
            rec = faults.find(c, a.daemon, a.node)
            if a.cmd != "start":
                faults.kill(c, rec, _signal(a.signal))
            if a.cmd != "kill":
                faults.start(c, rec)
            print(f"{a.cmd}: {rec.name}" + (f" on {rec.node}" if rec.node else "")
                  + (f", now pid {rec.pid}" if a.cmd != "kill" else ""))
            return 0
        if a.cmd == "helm-values":
            from localcluster import helmvalues
            print(helmvalues.write(c.s))
            return 0
    except (LookupError, ValueError, FileExistsError, TimeoutError, RuntimeError) as e:
        print(f"ovnkube-local: {e}", file=sys.stderr)
        return 1
    return 0


def _signal(name: str) -> int:
    n = name.upper().removeprefix("SIG")
    try:
        return int(signal.Signals[f"SIG{n}"])
    except KeyError:
        raise ValueError(f"--signal {name!r}: not a signal name (e.g. KILL, TERM)") from None


def pass_through(cmd: str, opts: dict[str, str], target: str | None, rest: list[str]) -> int:
    """Run (exec) the program a pass-through command stands for."""
    logging.basicConfig(level=logging.WARNING)
    try:
        c = lc.load(opts.get("name", "ovnk"))
        if cmd == "exec":
            assert target is not None
            return _exec_in(_pod_netns(c, target), rest)
        if cmd == "node-exec":
            if target not in c.s.all_nodes:
                raise LookupError(f"no node {target!r}; nodes: {', '.join(c.s.all_nodes)}")
            if not rest:
                raise UsageError("node-exec: give a command after the node")
            # like `docker exec` into a kind node: its network and its files
            os.execvp(sys.executable, [sys.executable, "-m", "localcluster.nsexec", "--mount",
                                       str(c.node_mount_ns(target)), c.s.node_netns(target),
                                       *rest])
        if cmd in ("nbctl", "sbctl"):
            prog, unix, addr = (("ovn-nbctl", c.s.nb_unix, c.s.nb_address) if cmd == "nbctl"
                                else ("ovn-sbctl", c.s.sb_unix, c.s.sb_address))
            if c.s.cni == "ovn":
                os.execvp(prog, [prog, f"--db={unix}", *rest])
            # the databases of a network installed later listen on the control plane
            return _exec_in(c.s.netns("cp"), [prog, "--no-leader-only", f"--db={addr}", *rest])
        if cmd == "vsctl":
            node = opts.get("node")
            if node is None:
                raise UsageError(f"vsctl: give --node NODE (nodes: {', '.join(c.s.all_nodes)})")
            if node not in c.s.all_nodes:
                raise LookupError(f"no node {node!r}; nodes: {', '.join(c.s.all_nodes)}")
            argv = c.vsctl_argv(node, *rest)
            os.execvp(argv[0], argv)
        kubectl = kube_bin("kubectl")
        os.execv(kubectl, [kubectl, f"--kubeconfig={c.s.kubeconfig}", *rest])
    except UsageError:
        raise
    except (LookupError, ValueError, FileNotFoundError) as e:
        print(f"ovnkube-local: {e}", file=sys.stderr)
        return 1
    return 127  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
