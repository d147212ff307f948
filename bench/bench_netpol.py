"""NetworkPolicy: namespaces x pods x policies created at once against a real
kube-apiserver, turned into OVN port groups, ACLs and address sets by
`ovnkube master`; then single-label changes, a no-op restart and a raw
baseline.

    .venv/bin/python bench/bench_netpol.py [--namespaces 200] [--policies 10]
                                           [--pods 20] [--nodes 20] [--changes 100]

Starts its own OVN central, Kubernetes control plane (etcd + kube-apiserver)
and master in a temp dir and removes them afterwards (also on failure, Ctrl-C
or SIGTERM). The master starts first; then the benchmark creates Node objects
(with the chassis annotation a node agent would set, no kubelets), the
namespaces (label team=<i % 5>), pods bound to the nodes (labels
app=<j % 10>, role=<j % 2>, a container port named "http") and, per
namespace, policies mixing podSelector peers, namespaceSelector peers, ports
by number and by name and one egress policy with an ipBlock.

Prints:
  burst     time from the LAST create call's answer until the NB (seen by an
            IDL client) holds every policy's and namespace's ACLs (counted by
            owner type), every port group with exactly its pods' ports and
            every address set with its expected number of addresses (then the
            addresses themselves are checked against the pods' annotations);
            NB rows, DB file size, the master's NB transactions, RSS and CPU
  label     p50/p99 of pod label patch sent -> the peer address set in the NB
            holding (or no longer holding) the pod's IP, one change at a time
  restart   a new master after the old one stopped: start -> "master started"
            in its log, and the NB transactions it wrote (expected: 0)
  baseline  the same ACL, Port_Group and Address_Set rows written in ONE
            JSON-RPC `transact` (what `ovsdb-client transact` sends; the
            command line would be too long for it or for ovn-nbctl) into a
            fresh NB already holding the ports: the floor for the NB part
Targets are printed beside the figures; the benchmark never fails on time.
The benchmark's API calls are made from threads inside the control-plane
namespace, straight to the apiserver as the master's are, not through the
loopback forward (which adds ~40 ms to about one request in ten).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.benchlib import pct, rss_mb  # noqa: E402
from bench.netpol_baseline import baseline, snapshot  # noqa: E402
from bench.netpol_nb import NbWatch, compact, db_size, nb_counts, nb_transactions  # noqa: E402
from bench.netpol_workload import (  # noqa: E402
    Obj,
    Workload,
    expected,
    peer_set_name,
    pod_labels,
    serviceaccount_body,
)
from localcluster import netns as nets  # noqa: E402
from localcluster.kube import KubeControlPlane, control_plane_netns  # noqa: E402
from localcluster.ovn import OvnCentral  # noqa: E402
from localcluster.procs import Daemon  # noqa: E402
from ovnkube.annotations import POD_NETWORKS, PodNetwork  # noqa: E402
from ovnkube.kubeclient import api_client, pod_path, request  # noqa: E402
from ovnkube.master.translate import netpol  # noqa: E402

TARGET_CONVERGE_S = 30.0
TARGET_LABEL_P99_MS = 200.0
TARGET_RESYNC_S = 5.0


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the benchmark -------------------------------------------------------------------

def master_daemon(name: str, central: OvnCentral, cp: KubeControlPlane, work: Path) -> Daemon:
    # In the control-plane namespace, as in a cluster: straight to the
    # apiserver, not through the benchmark's loopback forward.
    return Daemon(name, [sys.executable, "-m", "ovnkube.cli", "master",
                         f"--nb-address={central.nb_unix}",
                         f"--k8s-kubeconfig={cp.inner_kubeconfig}",
                         "--loglevel=info", "--no-leader-elect"],
                  work / f"{name}.log", netns=cp.netns, env={"PYTHONPATH": str(ROOT)})


def wait_started(master: Daemon, timeout: float = 180) -> float:
    """Seconds until the master logs "master started"."""
    t0 = time.monotonic()
    while "master started" not in master.log_path.read_text(errors="replace"):
        master.check_alive()
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{master.name} did not start in {timeout:.0f}s")
        time.sleep(0.02)
    return time.monotonic() - t0


class CpClient:
    """The benchmark's API calls, made from threads inside the control-plane
    namespace straight to the apiserver, as the master's are. (Through the
    loopback forward into it, one request in ten or so waits ~40 ms more:
    the forward's sockets have Nagle on, which meets the peer's delayed ACK.)"""

    def __init__(self, cp: KubeControlPlane, threads: int = 16) -> None:
        self.api = api_client(str(cp.inner_kubeconfig))
        self.pool = cf.ThreadPoolExecutor(threads, initializer=nets.enter_netns,
                                          initargs=(cp.netns,))

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Obj:
        return self.pool.submit(request, self.api, method, path, body, **kw).result()

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """fn on the pool's threads (fn calls `request(self.api, ...)` itself)."""
        return list(self.pool.map(fn, items))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def pod_ips(kc: CpClient) -> dict[str, str]:
    """Pod key -> its IPv4 address as the master annotated it."""
    out = {}
    for p in kc.call("GET", "/api/v1/pods", timeout=120)["items"]:
        raw = (p["metadata"].get("annotations") or {}).get(POD_NETWORKS)
        if raw:
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            out[key] = str(PodNetwork.parse(raw).ip_addresses[0].ip)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespaces", type=int, default=200)
    ap.add_argument("--policies", type=int, default=10, help="per namespace")
    ap.add_argument("--pods", type=int, default=20, help="per namespace")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--changes", type=int, default=100, help="label changes timed")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for the burst")
    args = ap.parse_args()
    if args.policies < 1 or args.pods < 1:
        ap.error("--policies and --pods must be at least 1")
    # A SIGTERM or SIGHUP (unless ignored, as under nohup) still runs the
    # clean-up below; Ctrl-C does through KeyboardInterrupt.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, lambda *_: sys.exit(143))
    w = Workload(args.namespaces, args.policies, args.pods, args.nodes)
    work = Path(tempfile.mkdtemp(prefix="ovk-bnp-", dir="/tmp"))
    ns_set = nets.NetnsSet(f"ovkb{secrets.token_hex(2)}-")
    cp: KubeControlPlane | None = None
    central: OvnCentral | None = None
    masters: list[Daemon] = []
    watch: NbWatch | None = None
    kc: CpClient | None = None
    try:
        central = OvnCentral(work / "central")
        central.start()
        cp = KubeControlPlane(work / "kube", control_plane_netns(ns_set, "172.31.255.1"),
                              "172.31.255.1")
        cp.start()
        kc = CpClient(cp)
        api = kc.api
        master = master_daemon("master", central, cp, work)
        masters.append(master)
        master.start()
        watch = NbWatch(central.nb_unix).start()
        started = wait_started(master)
        watch.connected.wait(30)
        rss0 = rss_mb(master.pid)[0]
        print(f"master started in {started:.1f}s (empty cluster), RSS {rss0:.0f} MiB")

        # --- 1. burst ------------------------------------------------------------------
        nss = w.ns_names()
        labels = {f"{ns}/p{j}": pod_labels(j) for ns in nss for j in range(w.pods)}
        ex = expected(w, labels)
        watch.expect_state(ex)
        n_pods = len(labels)
        print(f"workload: {w.namespaces} namespaces x {w.pods} pods on {w.nodes} nodes "
              f"({n_pods} pods), {w.policies} policies per namespace ({ex.policies}); expect "
              f"{sum(ex.acls.values())} ACLs ({ex.acls[netpol.POLICY_OWNER]} of policies), "
              f"{len(ex.port_groups)} port groups, {len(ex.address_sets)} address sets "
              f"({sum(len(m) for m in ex.address_sets.values())} addresses)")
        finished: list[float] = []

        def call(path: str, body: Obj) -> None:
            request(api, "POST", path, body, timeout=120)
            finished.append(time.monotonic())

        def make_node(n: str) -> None:
            call("/api/v1/nodes", w.node_body(n))

        def make_ns(i_ns: tuple[int, str]) -> None:
            i, ns = i_ns
            call("/api/v1/namespaces", w.ns_body(i, ns))
            call(f"/api/v1/namespaces/{ns}/serviceaccounts", serviceaccount_body())

        def make_obj(item: tuple[str, str, Obj]) -> None:
            ns, resource, body = item
            group = "api/v1" if resource == "pods" else "apis/networking.k8s.io/v1"
            call(f"/{group}/namespaces/{ns}/{resource}", body)

        objs = w.ns_objects()
        cpu0 = cpu_seconds(master.pid)
        t0 = time.monotonic()
        kc.map(make_node, w.node_names())
        kc.map(make_ns, list(enumerate(nss)))
        kc.map(make_obj, objs)
        last_create = max(finished)
        ok = watch.wait_complete(args.timeout)
        cpu = cpu_seconds(master.pid) - cpu0
        if not ok:
            print(f"burst INCOMPLETE after {args.timeout:.0f}s: {watch.missing()}")
        done = watch.complete_at if watch.complete_at is not None else time.monotonic()
        converge = done - last_create
        print(f"burst: {len(finished)} creates in {last_create - t0:.1f}s (16 threads); "
              f"NB complete {converge:.2f}s after the last create "
              f"({done - t0:.1f}s after the first) [target < {TARGET_CONVERGE_S:.0f}s: "
              f"{met(ok and converge < TARGET_CONVERGE_S)}]")
        # The addresses themselves, now that every pod has one.
        ips = pod_ips(kc)
        with watch.lock:
            wrong = [n for n, members in ex.address_sets.items()
                     if watch.asets.get(n) != {ips.get(k) for k in members}]
        print(f"burst: address sets checked against the pods' annotations: "
              f"{len(ex.address_sets) - len(wrong)} right, {len(wrong)} wrong")
        time.sleep(2)
        txns = nb_transactions(central)
        counts = nb_counts(central.nb_unix)
        size = db_size(central)
        compact(central)
        time.sleep(1)
        rss, hwm = rss_mb(master.pid)
        print("NB: " + ", ".join(f"{t} {a} ({o} ours)" for t, (a, o) in counts.items()) +
              f"; DB file {size:.1f} MB ({db_size(central):.1f} MB compacted); "
              f"master NB transactions {txns} (start-up included)")
        print(f"master: RSS {rss:.0f} MiB now, {hwm:.0f} MiB peak ({rss0:.0f} MiB before); "
              f"CPU {cpu:.1f}s during the burst")
        snap = snapshot(central.nb_unix)

        # --- 2. label changes ----------------------------------------------------------
        lat: list[float] = []
        moves = collections.Counter[str]()
        for c in range(args.changes):
            p = c // 2  # each pod leaves/joins, then goes back
            i, j = p % w.namespaces, (p // w.namespaces) % w.pods
            ns, key = nss[i], f"{nss[i]}/p{j}"
            role = "1" if labels[key]["role"] == "0" else "0"
            aset = peer_set_name(ns, {"podSelector": {"matchLabels": {"role": "1"}}})
            if not watch.want(aset, ips[key], present=role == "1"):
                print(f"label change {c} ({key} role={role}): address set already as wanted")
                continue
            t = time.monotonic()
            kc.call("PATCH", pod_path(ns, f"p{j}"), {"metadata": {"labels": {"role": role}}},
                    content_type="application/merge-patch+json")
            labels[key] = {**labels[key], "role": role}
            seen = watch.wait_want(30)
            if seen is None:
                print(f"label change {c} ({key} role={role}): not seen in 30s")
                continue
            lat.append(seen - t)
            moves["join" if role == "1" else "leave"] += 1
        if lat:
            p99 = pct(lat, .99) * 1000
            print(f"label: {len(lat)} changes ({moves['join']} joins, {moves['leave']} leaves), "
                  f"patch -> address set in the NB: p50 {pct(lat, .5) * 1000:.0f} ms, "
                  f"p99 {p99:.0f} ms, max {max(lat) * 1000:.0f} ms "
                  f"[target p99 < {TARGET_LABEL_P99_MS:.0f} ms: "
                  f"{met(len(lat) == args.changes and p99 < TARGET_LABEL_P99_MS)}]")
        # Back where the burst left it (every pod flipped an even number of times
        # unless --changes is odd): the restart below must find nothing to do.
        watch.expect_state(expected(w, labels))
        if not watch.wait_complete(60):
            print(f"after the label changes the NB is not as expected: {watch.missing()}")

        # --- 3. no-op restart ------------------------------------------------------------
        time.sleep(2)
        compact(central)
        time.sleep(1)
        before = nb_transactions(central)
        master.stop()
        master2 = master_daemon("master-2", central, cp, work)
        masters.append(master2)
        master2.start()
        resync = wait_started(master2)
        time.sleep(5)  # anything it would still write after start-up
        writes = nb_transactions(central) - before
        print(f"restart: new master started (caches listed, NB synced) in {resync:.1f}s, "
              f"{writes} NB transactions written [target < {TARGET_RESYNC_S:.0f}s with 0 "
              f"writes: {met(resync < TARGET_RESYNC_S and writes == 0)}]; "
              f"RSS {rss_mb(master2.pid)[0]:.0f} MiB")
        master2.stop()

        # --- 4. baseline ---------------------------------------------------------------
        took, bsize, nrows = baseline(work, snap)
        print(f"baseline: the same {nrows} rows ({len(snap.acls)} ACL, "
              f"{len(snap.port_groups)} Port_Group, {len(snap.address_sets)} Address_Set) in "
              f"one transaction into a fresh NB: {took:.3f}s, DB file {bsize:.1f} MB")
        print(f"converge: master {converge:.2f}s after the last create "
              f"({done - t0:.1f}s after the first) vs baseline {took:.3f}s (one NB "
              f"transaction): master/baseline = {converge / took:.1f}x "
              f"({(done - t0) / took:.0f}x from the first create)")
    finally:
        if kc is not None:
            kc.close()
        if watch is not None:
            watch.stop()
        parts: list[Daemon | KubeControlPlane | OvnCentral | None] = [
            *reversed(masters), cp, central]
        for part in parts:
            if part is not None:
                part.stop()
        ns_set.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
