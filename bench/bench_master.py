"""Master throughput: 1,000 pods on 20 nodes created at once against a real
kube-apiserver; time from create to annotated + logical switch port in the NB.

    .venv/bin/python bench/bench_master.py [--pods 1000] [--nodes 20]

Prints pods/s, p50/p99 per-pod latency and the master's peak RSS. The
baseline printed beside it is the apiserver alone: the same pods created and
each patched once with an annotation by the benchmark itself (no OVN), which
is the ceiling for anything that must write one annotation per pod.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import secrets
import shutil
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
from ovnkube.annotations import POD_NETWORKS  # noqa: E402
from ovnkube.informer import Informer  # noqa: E402
from ovnkube.kubeclient import ResourceAPI, patch_annotations, pod_path  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_pods(core: client.CoreV1Api, ns: str, names: list[str], nodes: list[str],
                created: dict[str, float]) -> None:
    def one(i_name: tuple[int, str]) -> None:
        i, name = i_name
        created[name] = time.monotonic()
        core.create_namespaced_pod(ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(node_name=nodes[i % len(nodes)],
                                  automount_service_account_token=False,
                                  containers=[client.V1Container(name="c", image="pause")])))
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(one, enumerate(names)))


def make_ns(core: client.CoreV1Api, ns: str) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    core.create_namespaced_service_account(ns, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="default")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ovk-bench-", dir="/tmp"))
    ns_set = nets.NetnsSet(f"ovkb{secrets.token_hex(2)}-")
    cp = central = master = None
    try:
        central = OvnCentral(work / "central").start()
        cp = KubeControlPlane(work / "kube", control_plane_netns(ns_set, "172.31.255.1"),
                              "172.31.255.1").start()
        api = cp.api_client()
        core = client.CoreV1Api(api)
        nodes = [f"node{i}" for i in range(args.nodes)]
        for n in nodes:
            core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=n)))

        # Baseline: the apiserver alone, one create and one annotation patch per pod.
        make_ns(core, "baseline")
        names = [f"b{i}" for i in range(args.pods)]
        t0 = time.monotonic()
        create_pods(core, "baseline", names, nodes, {})
        with cf.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda n: patch_annotations(api, pod_path("baseline", n),
                                                    {"bench": "x"}), names))
        base = time.monotonic() - t0
        core.delete_namespace("baseline")

        # In the control-plane namespace, as in a cluster: straight to the
        # apiserver, not through the benchmark's loopback forward.
        master = Daemon("master", [sys.executable, "-m", "ovnkube.cli", "master",
                                   f"--nb-address={central.nb_unix}",
                                   f"--k8s-kubeconfig={cp.inner_kubeconfig}",
                                   "--loglevel=warning", "--no-leader-elect"],
                        work / "master.log", netns=cp.netns,
                        env={"PYTHONPATH": str(ROOT)}).start()
        # Measure pods, not the master's start-up: wait until it has given
        # every node its subnet.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
                "k8s.ovn.org/node-subnets" not in (n.metadata.annotations or {})
                for n in core.list_node().items):
            time.sleep(0.2)
        ns = "bench"
        make_ns(core, ns)
        created: dict[str, float] = {}
        annotated: dict[str, float] = {}
        wired: dict[str, float] = {}
        names = [f"p{i}" for i in range(args.pods)]

        inf = Informer(ResourceAPI(api, f"/api/v1/namespaces/{ns}/pods", "Pod"))

        def on_pod(key: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            if new and POD_NETWORKS in (new["metadata"].get("annotations") or {}):
                annotated.setdefault(new["metadata"]["name"], time.monotonic())
        inf.add_handler(on_pod)
        inf.start()
        inf.wait_synced(30)
        done = threading.Event()

        # Watch the NB through an IDL monitor: each new LSP is timed as its
        # update arrives (polling with ovn-nbctl would steal the CPU we measure).
        def watch_nb() -> None:
            helper = ovs.db.idl.SchemaHelper(str(OVN_NB_SCHEMA))
            helper.register_columns("Logical_Switch_Port", ["name"])
            idl = ovs.db.idl.Idl(central.nb_unix, helper)
            prefix = f"{ns}_"

            def notify(event: str, row: object, updates: object = None) -> None:
                name = getattr(row, "name", "")
                if event == "create" and name.startswith(prefix):
                    wired.setdefault(name[len(prefix):], time.monotonic())
            idl.notify = notify
            while not done.is_set():
                idl.run()
                if idl.has_ever_connected() and idl.change_seqno:
                    nb_ready.set()
                poller_ = ovs.poller.Poller()
                idl.wait(poller_)
                poller_.timer_wait(100)
                poller_.block()
            idl.close()
        nb_ready = threading.Event()
        poller = threading.Thread(target=watch_nb, daemon=True)
        poller.start()
        nb_ready.wait(30)
        t0 = time.monotonic()
        cpu0 = cpu_seconds(master.pid)
        create_pods(core, ns, names, nodes, created)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not (len(annotated) == len(wired) == args.pods):
            time.sleep(0.05)
        done.set()
        cpu = cpu_seconds(master.pid) - cpu0
        inf.stop()
        if len(annotated) < args.pods or len(wired) < args.pods:
            print(f"incomplete: {len(annotated)} annotated, {len(wired)} wired")
        lat = [max(annotated[n], wired[n]) - created[n] for n in names
               if n in annotated and n in wired]
        total = max(max(annotated[n], wired[n]) for n in names
                    if n in annotated and n in wired) - t0
        print(f"pods: {args.pods} on {args.nodes} nodes")
        print(f"master: {args.pods / total:.0f} pods/s (create -> annotated + LSP), "
              f"total {total:.1f}s")
        print(f"per-pod latency: p50 {pct(lat, 0.5) * 1000:.0f} ms, "
              f"p99 {pct(lat, 0.99) * 1000:.0f} ms, min {min(lat) * 1000:.0f} ms")
        done_names = [n for n in names if n in annotated and n in wired]
        last_create = max(created[n] for n in done_names) - t0
        print(f"creates took {last_create:.1f}s; first 100 pods' p50 latency "
              f"{pct(lat[:100], 0.5) * 1000:.0f} ms")
        print(f"master peak RSS: {rss_mb(master.pid)[1]:.0f} MiB, CPU {cpu:.1f}s "
              f"({cpu / total:.0%} of one core over the run)")
        print(f"baseline (apiserver alone: create + 1 patch per pod): "
              f"{args.pods / base:.0f} pods/s; master/baseline = {base / total:.2f}")
    finally:
        for part in (master, cp, central):
            if part is not None:
                part.stop()
        ns_set.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
