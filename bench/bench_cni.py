"""CNI benchmark: shim start-up, and ADD latency (exec to result) p50/p99 for
100 sequential and 30 parallel pods, split into waiting for the pod annotation,
plumbing (veth + netns + OVS port) and waiting for ovn-controller's
`ovn-installed`. Real kube-apiserver, OVN central, OVS (netdev), ovn-controller
and `ovnkube node`, one node in its own namespace. Prints figures; never fails
on time.

    .venv/bin/python bench/bench_cni.py [--sequential 100] [--parallel 30]
"""

from __future__ import annotations

import argparse
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.benchlib import pct  # noqa: E402
from localcluster import netns as nets  # noqa: E402
from localcluster.kube import KubeControlPlane, control_plane_netns  # noqa: E402
from localcluster.ovn import OvnCentral, OvsNode  # noqa: E402
from localcluster.procs import free_port  # noqa: E402
from tests.node_helpers import Bed, Node, Pod  # noqa: E402

TIMINGS = re.compile(r"done in (\d+)ms \(annotation=([\d.]+)ms plumbing=([\d.]+)ms "
                     r"ovn-installed=([\d.]+)ms\)")


def row(label: str, values: list[float]) -> str:
    return (f"  {label:<28} p50 {pct(values, 0.5):7.1f} ms   p99 {pct(values, 0.99):7.1f} ms   "
            f"mean {statistics.mean(values):7.1f} ms")


def timed_exec(argv: list[str], env: dict[str, str], stdin: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, text=True, capture_output=True, env=env, check=True)
    return (time.perf_counter() - t0) * 1000


def shim_startup(node: Node, n: int = 40) -> None:
    shim = str(node.cni_bin / "ovn-k8s-cni-overlay")
    env = {"CNI_COMMAND": "VERSION"}
    first = Path(shim).read_text().splitlines()[0][2:].split()
    base = [timed_exec([first[0], "-IS", "-c", "pass"], {}, "") for _ in range(n)]
    version = [timed_exec([shim], env, "{}") for _ in range(n)]
    print(f"shim start-up ({n} execs, {' '.join(first)}):")
    print(row("python -IS -c pass (floor)", base))
    print(row("shim VERSION (exec to exit)", version))


def add_one(bed: Bed, pod: Pod) -> tuple[float, float, float, float, float]:
    """(exec-to-result ms, shim overhead ms, annotation, plumbing, ovn-installed)."""
    t0 = time.perf_counter()
    r = bed.shim(pod.node, "ADD", pod)
    total = (time.perf_counter() - t0) * 1000
    if r.code != 0:
        raise RuntimeError(f"ADD {pod.name} failed: {r.out}")
    m = TIMINGS.search(r.stderr)
    if m is None:
        raise RuntimeError(f"no timings in the shim's log: {r.stderr!r}")
    server, ann, plumb, inst = (float(x) for x in m.groups())
    return total, total - server, ann, plumb, inst


def report(label: str, samples: list[tuple[float, float, float, float, float]],
           wall: float) -> None:
    cols = list(zip(*samples, strict=True))
    print(f"{label}: {len(samples)} pods in {wall:.1f}s ({len(samples) / wall:.1f} pods/s)")
    for name, values in zip(("ADD exec to result", "shim overhead (exec+IPC)",
                             "  waiting for annotation", "  plumbing", "  waiting ovn-installed"),
                            cols, strict=True):
        print(row(name, list(values)))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sequential", type=int, default=100)
    p.add_argument("--parallel", type=int, default=30)
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ovk-bench-", dir="/tmp"))
    ns = nets.NetnsSet(f"ovkb{secrets.token_hex(2)}-")
    ovs_nodes: list[OvsNode] = []
    cp = central = bed = None
    try:
        cp = KubeControlPlane(work / "kube", control_plane_netns(ns, "172.31.255.1"),
                              "172.31.255.1").start()
        central = OvnCentral(work / "central", tcp_host="127.0.0.1", nb_port=free_port(),
                             sb_port=free_port()).start()

        def ovs_factory(name: str, netns: str | None = None) -> OvsNode:
            node = OvsNode(work / name, netns=netns)
            ovs_nodes.append(node)
            return node.start()

        bed = Bed(cp, central, ns, ovs_factory, work)
        node = bed.add_node(extra_args=("-v", "info", "--pod-annotation-timeout", "60"))
        shim_startup(node)
        pods = [bed.new_pod(node, 10 + i) for i in range(a.sequential)]
        t0 = time.monotonic()
        seq = [add_one(bed, pod) for pod in pods]
        report("\nsequential ADD", seq, time.monotonic() - t0)
        ppods = [bed.new_pod(node, 10 + a.sequential + i) for i in range(a.parallel)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(a.parallel) as ex:
            par = list(ex.map(lambda pod: add_one(bed, pod), ppods))
        report(f"\nparallel ADD ({a.parallel} at once)", par, time.monotonic() - t0)
        return 0
    finally:
        if bed is not None:
            bed.stop()
        for n in reversed(ovs_nodes):
            n.stop()
        if central is not None:
            central.stop()
        if cp is not None:
            cp.stop()
        ns.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
