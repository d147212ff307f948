"""Services: 1,000 Services x 5 endpoints created at once against a real
kube-apiserver (+controller-manager), turned into OVN load balancers by
`ovnkube master`; then single-endpoint changes.

    .venv/bin/python bench/bench_services.py [--services 1000] [--endpoints 5]
                                             [--changes 100] [--master-profile FILE]

Starts its own OVN central, Kubernetes control plane and master in a temp dir
and removes them afterwards. EndpointSlices are created directly (label
kubernetes.io/service-name, managed-by "bench"), so no pods are needed.

Prints:
  burst    time from the first create until every Service's load balancer is
           in the NB with all its backends (seen by an IDL client of the NB),
           the apiserver's share of it (the creates themselves), the master's
           NB transactions, NB rows, DB file size and the master's RSS
  update   p50/p99 of EndpointSlice update (API call sent) -> NB row updated
           (seen by the IDL), one change at a time
  baseline the same load balancers written by one ovn-nbctl transaction into
           a fresh NB: the floor for the NB part of the burst
With --master-profile FILE the master runs under cProfile (slower) and the
top functions by cumulative time are printed.
Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import pstats
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ovs.db.idl  # noqa: E402
import ovs.poller  # noqa: E402
from kubernetes import client  # noqa: E402

from bench.benchlib import pct, rss_mb  # noqa: E402
from localcluster import netns as nets  # noqa: E402
from localcluster.kube import KubeControlPlane, control_plane_netns  # noqa: E402
from localcluster.ovn import OVN_NB_SCHEMA, OvnCentral  # noqa: E402
from localcluster.procs import Daemon  # noqa: E402

NS = "bench"


def endpoints(i: int, n: int, gen: int = 0) -> list[str]:
    """n pod addresses for service i; `gen` changes the last one."""
    base = 10 * 65536 * 256 + 244 * 65536 + 16 * 256 + i * 8   # 10.244.16.0 + 8 i
    ips = [base + k for k in range(n)]
    if gen:
        ips[-1] = 10 * 65536 * 256 + 245 * 65536 + gen * 8 + i % 8  # 10.245.x.y
    return [".".join(str((ip >> s) & 255) for s in (24, 16, 8, 0)) for ip in ips]


class NbWatch:
    """An IDL replica of Load_Balancer name+vips, noting when each LB's vips
    first contain a wanted backend address."""

    def __init__(self, remote: str) -> None:
        helper = ovs.db.idl.SchemaHelper(str(OVN_NB_SCHEMA))
        helper.register_columns("Load_Balancer", ["name", "vips"])
        self.idl = ovs.db.idl.Idl(remote, helper)
        self.idl.notify = self._notify  # type: ignore[method-assign]
        self.lock = threading.Lock()
        self.wanted: dict[str, tuple[str, int]] = {}  # LB name -> (address, backend count)
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition(self.lock)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NbWatch:
        self.thread.start()
        return self

    def want(self, name: str, address: str, count: int) -> None:
        with self.lock:
            self.wanted[name] = (address, count)
            self.seen.pop(name, None)

    def _notify(self, event: str, row: Any, updates: Any = None) -> None:
        if event == "delete":
            return
        try:
            name, vips = row.name, row.vips
        except AttributeError:
            return
        now = time.monotonic()
        with self.lock:
            w = self.wanted.get(name)
            if w is None or name in self.seen:
                return
            backends = ",".join(vips.values()).split(",")
            if f"{w[0]}:8080" in backends and len(backends) == w[1]:
                self.seen[name] = now
                self.cond.notify_all()

    def wait(self, names: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not all(n in self.seen for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.idl.run()
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(200)
            poller.block()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.idl.close()


def nb_rows(central: OvnCentral) -> tuple[int, int]:
    """(Load_Balancer rows, all rows) in the NB."""
    out = subprocess.run(["ovsdb-client", "-f", "json", "dump", central.nb_unix,
                          "OVN_Northbound"], capture_output=True, text=True, check=True).stdout
    total = lb = 0
    for line in out.splitlines():
        t = json.loads(line)
        n = len(t["data"])
        total += n
        if t.get("caption", "").startswith("Load_Balancer table"):
            lb = n
    return lb, total


def nb_transactions(central: OvnCentral, comment: str) -> int:
    out = subprocess.run(["ovsdb-tool", "show-log", str(central.workdir / "ovnnb_db.db")],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines()
               if line.startswith("record ") and f'"{comment}' in line)


def compact(central: OvnCentral) -> None:
    subprocess.run(["ovs-appctl", "-t", str(central.workdir / "ovnnb_db.ctl"),
                    "ovsdb-server/compact"], capture_output=True, check=False)


def svc_body(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": 8080}]}}


def slice_body(i: int, n: int, gen: int = 0, rv: str | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": f"s{i}", "labels": {
        "kubernetes.io/service-name": f"s{i}", "endpointslice.kubernetes.io/managed-by": "bench"}}
    if rv:
        md["resourceVersion"] = rv
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": md,
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}
                          for ip in endpoints(i, n, gen)]}


def lb(i: int) -> str:
    return f"Service_{NS}/s{i}_TCP_cluster"


def baseline(work: Path, services: int, n: int, cips: list[str]) -> tuple[float, int]:
    """The same LBs, one ovn-nbctl transaction, fresh NB: (seconds, DB bytes)."""
    central = OvnCentral(work / "baseline").start()
    try:
        central.nbctl("create", "Load_Balancer_Group", "name=clusterLBGroup")
        args: list[str] = []
        for i in range(services):
            backends = ",".join(f"{ip}:8080" for ip in endpoints(i, n))
            args += ["--", f"--id=@lb{i}", "create", "Load_Balancer", f"name={lb(i)}",
                     "protocol=tcp", f'vips:"{cips[i]}:80"="{backends}"',
                     "options:event=false", "options:reject=true",
                     'external_ids:"k8s.ovn.org/kind"=Service',
                     "--", "add", "Load_Balancer_Group", "clusterLBGroup", "load_balancer",
                     f"@lb{i}"]
        t0 = time.monotonic()
        subprocess.run(["ovn-nbctl", f"--db={central.nb_unix}", *args[1:]],
                       capture_output=True, check=True)
        took = time.monotonic() - t0
        return took, os.path.getsize(central.workdir / "ovnnb_db.db")
    finally:
        central.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--master-profile", default="",
                    help="run the master under cProfile, write the profile to this file")
    args = ap.parse_args()
    # A SIGTERM (e.g. `timeout`) still runs the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="ovk-bsvc-", dir="/tmp"))
    ns_set = nets.NetnsSet(f"ovkb{secrets.token_hex(2)}-")
    cp = central = master = None
    watch: NbWatch | None = None
    try:
        central = OvnCentral(work / "central").start()
        cp = KubeControlPlane(work / "kube", control_plane_netns(ns_set, "172.31.255.1"),
                              "172.31.255.1",
                              controllers=["endpointslice", "endpointslicemirroring"]).start()
        api = cp.api_client()
        core, disc = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
        prof = ["-m", "cProfile", "-o", args.master_profile] if args.master_profile else []
        master = Daemon("master", [sys.executable, *prof, "-m", "ovnkube.cli", "master",
                                   f"--nb-address={central.nb_unix}",
                                   f"--k8s-kubeconfig={cp.kubeconfig}", "--loglevel=warning",
                                   "--no-leader-elect"],
                        work / "master.log", env={"PYTHONPATH": str(ROOT)}).start()
        watch = NbWatch(central.nb_unix).start()
        # The master is up once the `kubernetes` service's LB is there.
        deadline = time.monotonic() + 120
        while "Service_default/kubernetes" not in central.nbctl("--bare", "--columns=name",
                                                                 "list", "Load_Balancer"):
            if time.monotonic() > deadline:
                raise TimeoutError("master did not program the kubernetes service")
            time.sleep(0.2)
        rss0 = rss_mb(master.pid)[0]

        # --- burst: services and their slices, all at once ----------------------
        n, k = args.services, args.endpoints
        for i in range(n):
            watch.want(lb(i), endpoints(i, k)[-1], k)
        cips: list[str] = [""] * n

        def create(i: int) -> None:
            s = core.create_namespaced_service(NS, svc_body(i))
            cips[i] = s.spec.cluster_ip
            disc.create_namespaced_endpoint_slice(NS, slice_body(i, k))

        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(16) as ex:
            list(ex.map(create, range(n)))
        api_done = time.monotonic() - t0
        ok = watch.wait([lb(i) for i in range(n)], 600)
        total = max(watch.seen.values()) - t0 if watch.seen else float("nan")
        if not ok:
            print(f"incomplete: {len(watch.seen)} of {n} LBs programmed")
        lat = [watch.seen[lb(i)] - t0 for i in range(n) if lb(i) in watch.seen]
        time.sleep(1)
        txns = nb_transactions(central, "northd_sync")
        lb_rows, all_rows = nb_rows(central)
        db_size = os.path.getsize(central.workdir / "ovnnb_db.db")
        compact(central)
        time.sleep(0.5)
        db_compact = os.path.getsize(central.workdir / "ovnnb_db.db")
        rss, hwm = rss_mb(master.pid)
        print(f"services: {n} x {k} endpoints (ClusterIP, TCP), created with 16 client threads")
        print(f"burst: all {len(watch.seen)} LBs in the NB {total:.1f}s after the first create "
              f"(apiserver creates took {api_done:.1f}s); LB ready p50 {pct(lat, .5):.1f}s "
              f"p99 {pct(lat, .99):.1f}s")
        print(f"burst: master NB transactions {txns} (incl. start-up)")
        print(f"NB: {lb_rows} Load_Balancer rows, {all_rows} rows in all; DB file "
              f"{db_size / 1e6:.1f} MB ({db_compact / 1e6:.1f} MB compacted)")
        print(f"master RSS: {rss:.0f} MiB now, {hwm:.0f} MiB peak ({rss0:.0f} MiB before)")

        # --- single-endpoint changes ------------------------------------------------
        ups: list[float] = []
        for j in range(args.changes):
            i = (j * 7919) % n
            gen = j + 1
            name = lb(i)
            cur = disc.read_namespaced_endpoint_slice(f"s{i}", NS)
            body = slice_body(i, k, gen, cur.metadata.resource_version)
            watch.want(name, endpoints(i, k, gen)[-1], k)
            t = time.monotonic()
            disc.replace_namespaced_endpoint_slice(f"s{i}", NS, body)
            if not watch.wait([name], 30):
                print(f"change {j}: not seen in 30s")
                continue
            ups.append(watch.seen[name] - t)
        if ups:
            print(f"update: {len(ups)} single-endpoint changes, EndpointSlice update -> NB: "
                  f"p50 {pct(ups, .5) * 1000:.0f} ms, p99 {pct(ups, .99) * 1000:.0f} ms, "
                  f"max {max(ups) * 1000:.0f} ms")
        # (the DB was compacted after the burst: these are the changes' transactions)
        print(f"update: master NB transactions for the changes: "
              f"{nb_transactions(central, 'northd_sync')}")

        # --- baseline ------------------------------------------------------------
        took, size = baseline(work, n, k, cips)
        print(f"baseline: {n} LBs in one ovn-nbctl transaction: {took:.2f}s, "
              f"DB file {size / 1e6:.1f} MB")
    finally:
        if watch is not None:
            watch.stop()
        for part in (master, cp, central):
            if part is not None:
                part.stop()
        ns_set.cleanup()
        if args.master_profile and Path(args.master_profile).exists():
            st = pstats.Stats(args.master_profile)
            st.sort_stats("cumulative").print_stats(25)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
