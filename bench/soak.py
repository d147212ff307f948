"""Soak: pods and Services (with their EndpointSlices) created and deleted
continuously at a fixed rate on a 2-worker `ovnkube-local`, the invariants of
tests/chaos.py checked and the plugin's footprint printed every minute.

    .venv/bin/python bench/soak.py --minutes 30 [--rate 20] [--live 10]

Each minute: the master's and the node agents' RSS and open file
descriptors, the NB's row count and file size, and whether the invariants
held (one address per pod and none shared, one port per pod, no NB row of a
gone owner, one leading master, the live Services' VIPs answering from every
node). The floor is the first minute's figures: the last line prints the
last minute's against it and the RSS slope (MiB per 10 minutes) of each
process. A leak shows as a slope; the live objects' share is constant (at
most `--live` pods and Services exist at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import rss_mb  # noqa: E402
from localcluster.cluster import Cluster  # noqa: E402
from localcluster.procs import pid_alive  # noqa: E402
from tests.chaos import OWNED_TABLES, Chaos  # noqa: E402
from tests.e2e_helpers import AGNHOST, E2E  # noqa: E402

NS = "soak"


def manifest(i: int) -> str:
    name = f"soak-{i}"
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  containers: [{{name: c, image: "{AGNHOST}", args: [netexec, --http-port=8080]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def footprint(c: Cluster) -> dict[str, tuple[float, int]]:
    """Daemon label -> (RSS MiB, open file descriptors)."""
    out = {}
    for d in c.s.daemons:
        if d.name not in ("ovnkube-master", "ovnkube-node") or not pid_alive(d.pid):
            continue
        label = "master" if d.name == "ovnkube-master" else f"agent {d.node}"
        out[label] = (rss_mb(d.pid)[0], len(os.listdir(f"/proc/{d.pid}/fd")))
    return out


def nb_size(c: Cluster) -> tuple[int, float]:
    """(rows in the tables the master writes, NB file MiB)."""
    rows = 0
    for table in (*OWNED_TABLES, "Load_Balancer_Group"):
        out = json.loads(c.nbctl("--format=json", "--columns=_uuid", "list", table))
        rows += len(out["data"])
    db = Path(c.s.dir) / "central" / "ovnnb_db.db"
    return rows, db.stat().st_size / 2**20


def unanswered(e: E2E, c: Cluster, most: int = 3) -> list[str]:
    """Services (up to `most`) whose pod is Ready but whose VIP does not
    answer from a node."""
    pods = json.loads(e.kubectl("-n", NS, "get", "pods", "-o", "json"))["items"]
    ready = [p["metadata"]["name"] for p in pods if "deletionTimestamp" not in p["metadata"]
             and any(x["type"] == "Ready" and x["status"] == "True"
                     for x in p["status"].get("conditions", []))][:most]
    out = []
    for name in ready:
        vip = e.get("service", name, NS)["spec"]["clusterIP"]
        for node in c.s.nodes:
            try:
                e.curl(lambda *x, n=node: e.node_exec(n, *x), f"http://{vip}/hostname",
                       timeout=3)
            except subprocess.SubprocessError:
                out.append(f"{name} {vip} from {node}")
    return out


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (minute, value), per 10 minutes."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 10 * sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--rate", type=float, default=20, help="pods (and Services) per minute")
    p.add_argument("--live", type=int, default=10, help="how many exist at a time")
    a = p.parse_args()
    if a.minutes <= 0 or a.rate <= 0 or a.live < 1:
        p.error(f"want --minutes > 0, --rate > 0, --live >= 1 (got {a.minutes}, {a.rate}, "
                f"{a.live})")
    c = Cluster.create(f"soak{secrets.token_hex(2)}", 2)
    broken_minutes = 0
    try:
        e = E2E(c)
        ch = Chaos(e, Path(tempfile.mkdtemp(prefix="ovk-soak-", dir="/tmp")))
        e.kubectl("create", "namespace", NS)
        print(f"soak: {a.rate:g} pods and Services a minute, {a.live} live, "
              f"{a.minutes:g} minutes")
        print("minute  created  " + "  ".join(f"{k} RSS MiB/fds" for k in
                                             sorted(footprint(c))) + "  NB rows  NB MiB  "
              "invariants")
        t0 = time.monotonic()
        created, minute = 0, 0
        series: dict[str, list[tuple[float, float]]] = {}
        first: dict[str, float] = {}
        fd_series: dict[str, list[tuple[float, float]]] = {}
        while time.monotonic() - t0 < a.minutes * 60:
            e.apply(manifest(created), NS)
            if created >= a.live:
                old = f"soak-{created - a.live}"
                e.kubectl("-n", NS, "delete", "pod,service", old, "--wait=false")
            created += 1
            if time.monotonic() - t0 >= (minute + 1) * 60:
                minute += 1
                fp = footprint(c)
                rows, mib = nb_size(c)
                ck = ch.check(services=())
                broken = ck.broken() + unanswered(e, c)
                broken_minutes += bool(broken)
                for k, (rss, fds) in fp.items():
                    series.setdefault(k, []).append((minute, rss))
                    first.setdefault(k, rss)
                    fd_series.setdefault(k, []).append((minute, float(fds)))
                print(f"{minute:6d}  {created:7d}  " + "  ".join(
                    f"{fp[k][0]:8.1f}/{fp[k][1]:<4d}" for k in sorted(fp))
                    + f"  {rows:7d}  {mib:6.2f}  " + ("held" if not broken else
                                                       "BROKEN: " + "; ".join(broken)))
            time.sleep(max(0.0, t0 + created * 60 / a.rate - time.monotonic()))
        print("floor = minute 1; last vs floor, and RSS slope per 10 minutes:")
        for k, pts in sorted(series.items()):
            fds = fd_series[k]
            print(f"  {k}: {pts[-1][1]:.1f} MiB vs {first[k]:.1f} MiB "
                  f"({pts[-1][1] / first[k]:.2f}x), slope {slope(pts):+.2f} MiB/10 min; "
                  f"fds {fds[-1][1]:.0f} vs {fds[0][1]:.0f}, slope {slope(fds):+.1f}/10 min")
        print(f"invariants broken in {broken_minutes} of {minute} minutes")
    finally:
        c.down()
    return 1 if broken_minutes else 0


if __name__ == "__main__":
    sys.exit(main())
