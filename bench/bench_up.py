"""Time `ovnkube-local up` for 2 and 5 nodes (warm binaries; up includes
CoreDNS answering), then `down`; on the first cluster, `kubectl exec`
round trips.

    .venv/bin/python bench/bench_up.py [--nodes 2 5] [--execs 50]

The baselines printed beside them: the control plane alone (etcd +
kube-apiserver ready), which every cluster start pays; and `kubectl get
--raw /healthz`, the same kubectl process and apiserver round trip without
the exec stream (the floor for an exec).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localcluster import netns as nets  # noqa: E402
from localcluster.cluster import Cluster  # noqa: E402
from localcluster.kube import KubeControlPlane, control_plane_netns, kube_bin  # noqa: E402


def control_plane_only() -> float:
    work = Path(tempfile.mkdtemp(prefix="ovk-bench-", dir="/tmp"))
    ns = nets.NetnsSet(f"ovkb{secrets.token_hex(2)}-")
    cp = None
    try:
        t0 = time.monotonic()
        cp = KubeControlPlane(work, control_plane_netns(ns, "172.31.255.1"),
                              "172.31.255.1").start()
        return time.monotonic() - t0
    finally:
        if cp:
            cp.stop()
        ns.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def _timed(argv: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        out.append(time.monotonic() - t0)
    return out


def _pcts(xs: list[float]) -> tuple[float, float]:
    qs = statistics.quantiles(xs, n=100, method="inclusive")
    return qs[49] * 1000, qs[98] * 1000


def exec_round_trips(c: Cluster, n: int) -> None:
    kubectl = [kube_bin("kubectl"), f"--kubeconfig={c.s.kubeconfig}"]
    subprocess.run([*kubectl, "run", "bench-exec", "--image=busybox", "--", "sleep", "3600"],
                   check=True, capture_output=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Ready", "pod/bench-exec",
                    "--timeout=120s"], check=True, capture_output=True, timeout=130)
    execs = _timed([*kubectl, "exec", "bench-exec", "--", "true"], n)
    floor = _timed([*kubectl, "get", "--raw", "/healthz"], n)
    (e50, e99), (f50, f99) = _pcts(execs), _pcts(floor)
    print(f"kubectl exec x{n}: p50 {e50:.0f} ms, p99 {e99:.0f} ms; kubectl get --raw /healthz "
          f"p50 {f50:.0f} ms, p99 {f99:.0f} ms; ratio p50 {e50 / f50:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--execs", type=int, default=50)
    args = ap.parse_args()
    base = control_plane_only()
    print(f"baseline: etcd + kube-apiserver ready in {base:.1f}s")
    for n in args.nodes:
        t0 = time.monotonic()
        c = Cluster.create(f"bup{secrets.token_hex(2)}", n)
        up = time.monotonic() - t0
        if n == args.nodes[0] and args.execs:
            exec_round_trips(c, args.execs)
        t1 = time.monotonic()
        c.down()
        down = time.monotonic() - t1
        print(f"{n} nodes: up {up:.1f}s (all nodes Ready with subnets; {up / base:.1f}x the "
              f"control plane alone), down {down:.1f}s")


if __name__ == "__main__":
    main()
