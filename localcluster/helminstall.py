"""This project's Helm chart on an ovnkube-local cluster made with `--cni none`,
installed the way a user installs it: the real helm CLI, the cluster's
kubeconfig, the values `ovnkube-local helm-values` writes.

    python -m localcluster.helminstall install|uninstall [--name NAME] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from localcluster import helmvalues
from localcluster.cluster import Cluster
from localcluster.cluster import load as load_cluster
from localcluster.kube import kube_bin

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "ovn-kubernetes-py"
RELEASE = "ovn"
NAMESPACE = "ovn-kubernetes"


def helm(c: Cluster, *args: str, timeout: float = 300) -> str:
    res = subprocess.run([str(kube_bin("helm")), *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, "KUBECONFIG": str(c.s.kubeconfig)})
    if res.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])} failed: {res.stderr.strip()}")
    return res.stdout


def install(c: Cluster, sets: Sequence[str] = (), upgrade: bool = False,
            timeout: float = 300) -> None:
    """`helm install` (or upgrade) and wait until the network is up: every
    node Ready with a subnet, CoreDNS running."""
    if c.s.cni != "none":
        raise ValueError(f"cluster {c.s.name!r} has its network already (made without "
                         "--cni none)")
    values = helmvalues.write(c.s)
    verb = ["upgrade", RELEASE, str(CHART)] if upgrade else [
        "install", RELEASE, str(CHART), "--create-namespace"]
    args = [*verb, "-n", NAMESPACE, "-f", str(values)]
    for s in sets:
        args += ["--set", s]
    helm(c, *args)
    wait_network(c, timeout)


def wait_network(c: Cluster, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout

    def rollout(namespace: str, what: str) -> None:
        left = max(10.0, deadline - time.monotonic())
        c.kubectl("-n", namespace, "rollout", "status", what, f"--timeout={left:.0f}s",
                  timeout=left + 10)
    dbs = c.kubectl("-n", NAMESPACE, "get", "deployments", "-l", "app=ovnkube-db", "-o",
                    "name").split()  # ovnkube-db, or ovnkube-db-0.. of a raft cluster
    for what in ("daemonset/ovs-node", *dbs, "deployment/ovnkube-master",
                 "daemonset/ovnkube-node"):
        rollout(NAMESPACE, what)
    c.wait_nodes(timeout=max(10.0, deadline - time.monotonic()))
    rollout("kube-system", "deployment/coredns")


def uninstall(c: Cluster, timeout: float = 300) -> None:
    """`helm uninstall --wait`, then wait for the nodes to be NotReady."""
    helm(c, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", f"--timeout={timeout:.0f}s",
         timeout=timeout + 10)
    deadline = time.monotonic() + timeout
    while True:
        ready = [n for n, r in c.node_readiness().items() if r]
        if not ready:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes still Ready {timeout:.0f}s after the uninstall: "
                               f"{', '.join(ready)}")
        time.sleep(1)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m localcluster.helminstall",
                                description=__doc__)
    p.add_argument("action", choices=["install", "upgrade", "uninstall"])
    p.add_argument("--name", default="ovnk")
    p.add_argument("--set", action="append", default=[], dest="sets")
    a = p.parse_args()
    c = load_cluster(a.name)
    try:
        if a.action == "uninstall":
            uninstall(c)
        else:
            install(c, a.sets, upgrade=a.action == "upgrade")
    except (RuntimeError, TimeoutError, ValueError, subprocess.CalledProcessError) as e:
        print(f"helminstall: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
