"""Time `ovnkube-local up` for 2 and 5 nodes (warm binaries), then `down`.

    .venv/bin/python bench/bench_up.py [--nodes 2 5]

The baseline printed beside it is the control plane alone (etcd +
kube-apiserver ready), which every cluster start pays.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localcluster import netns as nets  # noqa: E402
from localcluster.cluster import Cluster  # noqa: E402
from localcluster.kube import KubeControlPlane, control_plane_netns  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, nargs="+", default=[2, 5])
    args = ap.parse_args()
    base = control_plane_only()
    print(f"baseline: etcd + kube-apiserver ready in {base:.1f}s")
    for n in args.nodes:
        t0 = time.monotonic()
        c = Cluster.create(f"bup{secrets.token_hex(2)}", n)
        up = time.monotonic() - t0
        t1 = time.monotonic()
        c.down()
        down = time.monotonic() - t1
        print(f"{n} nodes: up {up:.1f}s (all nodes Ready with subnets; {up / base:.1f}x the "
              f"control plane alone), down {down:.1f}s")


if __name__ == "__main__":
    main()
