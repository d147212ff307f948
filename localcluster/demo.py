"""`make demo`: bring up real OVN central, one OVS node and a real Kubernetes
control plane, each in its own network namespace; show what runs; tear down."""

from __future__ import annotations

import logging
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from localcluster import netns as nets
from localcluster.kube import KubeControlPlane, control_plane_netns, kube_bin
from localcluster.ovn import OvnCentral, OvnController, OvsNode, tool_version
from localcluster.procs import run


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="ovk-demo-", dir="/tmp"))
    ns = nets.NetnsSet(f"ovkdemo{secrets.token_hex(2)}-")
    central = node = controller = cp = None
    t0 = time.monotonic()
    try:
        step("OVN central (NB, SB, ovn-northd) in its own namespace")
        central_ns = ns.netns("central")
        central = OvnCentral(work / "central", netns=central_ns, tcp_host="127.0.0.1").start()
        step("one OVS node (ovsdb-server, ovs-vswitchd, br-int netdev) and ovn-controller")
        node_ns = ns.netns("node1")
        node = OvsNode(work / "node1", netns=node_ns).start()
        controller = OvnController(node, central.sb_unix, "node1", "192.168.100.11").start()
        step("Kubernetes control plane (etcd, kube-apiserver)")
        cp = KubeControlPlane(work / "kube", control_plane_netns(ns, "172.31.255.1"),
                              "172.31.255.1").start()
        central.nbctl("ls-add", "demo-switch")
        central.nbctl("lsp-add", "demo-switch", "demo-port")
        central.nbctl("lsp-set-addresses", "demo-port", "0a:58:0a:f4:00:05 10.244.0.5")

        print()
        print("versions:")
        for tool in ("ovs-vswitchd", "ovn-northd", "ovn-controller"):
            print(f"  {tool_version(tool)}")
        kubectl = run([kube_bin("kubectl"), "version", "--client", "-o", "yaml"])
        kubectl_version = kubectl.split("gitVersion: ")[1].split()[0]
        print(f"  kube-apiserver {cp.version()}, kubectl {kubectl_version}")
        print(f"  etcd {run([kube_bin('etcd'), '--version']).splitlines()[0].split()[-1]}")
        print(f"\nkubectl get namespaces:\n{cp.kubectl('get', 'namespaces')}")
        print(f"ovn-nbctl show:\n{central.nbctl('show')}")
        print(f"ovn-sbctl show:\n{central.sbctl('show')}")
        print(f"up in {time.monotonic() - t0:.1f}s; tearing down")
        return 0
    finally:
        for part in (cp, controller, node, central):
            if part is not None:
                part.stop()
        ns.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        step("torn down: no processes, namespaces or files left")


if __name__ == "__main__":
    sys.exit(main())
