"""Faults under load on an `ovnkube-local` cluster: the workload, the client
stream, and the invariants every fault must leave intact.

A run (`run_fault`): a Deployment scales 0 -> N pods while a client in a pod
streams requests to a Service of steady pods; the fault strikes once the
scale-up is under way; then the N pods must all come up with networking, the
invariants hold, the Deployment scales back to 0 and nothing of it is left
in the NB. Each run prints one line and appends it to
`_output/chaos/results.jsonl` (docs/RELIABILITY.md's table is made from it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localcluster.faults import RESTART_MARK
from localcluster.procs import pid_alive
from tests.e2e_helpers import E2E, netexec_deployment, wait_for
from tests.nblog import nb_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "_output" / "chaos" / "results.jsonl"
#: pods the Deployment scales to (the issue's 60; fewer for a quick look)
PODS = int(os.environ.get("OVNKUBE_CHAOS_PODS", "60"))
NS = "chaos"
SCALE, STEADY, CLIENT = "chaos-scale", "chaos-steady", "chaos-client"

#: what tables hold rows owned by which Kubernetes kind (external_ids)
OWNED_TABLES = ("Logical_Switch_Port", "Load_Balancer", "Logical_Switch", "Logical_Router",
                "Logical_Router_Port", "Logical_Router_Static_Route",
                "Logical_Router_Policy", "NAT", "ACL", "Port_Group", "Address_Set")

LEADERSHIP = re.compile(r"(\S+) (became leader|lost leadership) of ")

_CLIENT = textwrap.dedent("""
    import socket, sys, time
    url_host, port, out, interval = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    req = ("GET /hostname HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n").encode()
    with open(out, "a", buffering=1) as f:
        while True:
            t = time.time()
            ok = 0
            try:
                with socket.create_connection((url_host, port), timeout=1) as s:
                    s.settimeout(1)
                    s.sendall(req)
                    data = b""
                    while chunk := s.recv(4096):
                        data += chunk
                ok = int(data.startswith(b"HTTP/1.1 200"))
            except OSError:
                pass
            f.write(f"{t:.3f} {ok}\\n")
            time.sleep(max(0.0, interval - (time.time() - t)))
""")


class Stream:
    """Requests to host:port every `interval` s from a pod's network
    namespace, each recorded as (time, ok)."""

    def __init__(self, netns: str, host: str, port: int, out: Path,
                 interval: float = 0.05) -> None:
        self.out = out
        out.write_text("")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", _CLIENT, host, str(port),
             str(out), str(interval)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def samples(self) -> list[tuple[float, bool]]:
        out = []
        for line in self.out.read_text().splitlines():
            t, ok = line.split()
            out.append((float(t), ok == "1"))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def longest_gap(self, since: float = 0.0) -> float:
        """The longest time between two successful requests (after `since`)."""
        last: float | None = None
        gap = 0.0
        for t, ok in self.samples():
            if t < since or not ok:
                continue
            if last is not None:
                gap = max(gap, t - last)
            last = t
        return gap

    def answered_since(self, since: float) -> bool:
        return any(ok for t, ok in self.samples() if t >= since)

    def failures(self, since: float = 0.0) -> int:
        return sum(1 for t, ok in self.samples() if t >= since and not ok)


@dataclass
class Check:
    """What the invariants found (every list empty: all held)."""

    pods: int = 0
    #: pods with no or several addresses
    addressless: list[str] = field(default_factory=list)
    #: an address held by two pods
    duplicated: list[str] = field(default_factory=list)
    #: running pods without exactly one logical switch port
    portless: list[str] = field(default_factory=list)
    #: NB rows whose owner (a pod, Service or node) is gone: "table name (owner)"
    leaked: list[str] = field(default_factory=list)
    #: Service VIPs that did not answer from a node: "node vip"
    unanswered: list[str] = field(default_factory=list)
    #: the Lease's holder, and "" when none holds it
    leader: str = ""
    #: the live masters that say (in their logs) they lead
    leaders: list[str] = field(default_factory=list)

    def broken(self) -> list[str]:
        out = [f"{k}: {v}" for k, v in asdict(self).items()
               if isinstance(v, list) and v and k != "leaders"]
        if not self.leader:
            out.append("no master holds the lease")
        if self.leaders != [self.leader]:
            out.append(f"masters leading: {self.leaders}, lease held by {self.leader!r}")
        return out


class Chaos:
    def __init__(self, e2e: E2E, workdir: Path) -> None:
        self.e = e2e
        self.c = e2e.c
        self.workdir = workdir

    # --- the workload ------------------------------------------------------------

    def set_up(self) -> None:
        e = self.e
        e.kubectl("create", "namespace", NS)
        e.apply(netexec_deployment(SCALE, 0), NS)
        e.apply(netexec_deployment(STEADY, len(e.nodes)), NS)
        for name in (SCALE, STEADY):
            e.apply(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080, protocol: TCP}}]
""", NS)
        e.apply(f"""apiVersion: v1
kind: Pod
metadata: {{name: {CLIENT}}}
spec:
  nodeName: {e.nodes[-1]}
  containers: [{{name: c, image: registry.k8s.io/e2e-test-images/agnhost:2.53,
                 args: [pause]}}]
""", NS)
        e.ready_pods(f"app={STEADY}", len(e.nodes), NS, timeout=180)
        wait_for(lambda: e.get("pod", CLIENT, NS)["status"].get("podIP"), 120, "client pod")

    def stream(self, name: str) -> Stream:
        pod = self.e.get("pod", CLIENT, NS)
        vip = self.e.get("service", STEADY, NS)["spec"]["clusterIP"]
        netns = self.c.pod_netns(pod["spec"]["nodeName"], pod["metadata"]["uid"])
        s = Stream(netns, vip, 80, self.workdir / f"stream-{name}.log")
        wait_for(lambda: any(ok for _, ok in s.samples()), 60, "the stream's first answer")
        return s

    def scale(self, n: int) -> None:
        self.e.kubectl("-n", NS, "scale", f"deployment/{SCALE}", f"--replicas={n}")

    def scaled_pods(self) -> list[dict[str, Any]]:
        return self.e.pods(f"app={SCALE}", NS)

    def wait_scaled(self, n: int, timeout: float) -> float:
        t0 = time.monotonic()
        if n:
            self.e.ready_pods(f"app={SCALE}", n, NS, timeout=timeout)
        else:
            wait_for(lambda: not self.scaled_pods(), timeout, f"{SCALE} scaled to 0")
        return time.monotonic() - t0

    # --- the invariants ----------------------------------------------------------

    def check(self, services: tuple[str, ...] = (STEADY, SCALE)) -> Check:
        """The invariants; `services`: those whose VIP must answer from every node."""
        e = self.e
        ck = Check()
        pods = json.loads(e.kubectl("get", "pods", "-A", "-o", "json"))["items"]
        existing = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods}
        # A terminating pod may have lost its port already (the master lets it
        # go at the deletion); its address still counts among the held ones.
        running = [p for p in pods if p["status"].get("phase") == "Running"
                   and not p["spec"].get("hostNetwork")]
        serving = [p for p in running if "deletionTimestamp" not in p["metadata"]]
        ck.pods = len(serving)
        holders: dict[str, list[str]] = {}
        for p in running:
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            ips = [a["ip"] for a in p["status"].get("podIPs", [])]
            if len(ips) != 1 and p in serving:
                ck.addressless.append(f"{key} {ips}")
            for ip in ips:
                holders.setdefault(ip, []).append(key)
        # An address handed out twice shows in the master's annotations too,
        # also of pods not running yet.
        for p in pods:
            ann = p["metadata"].get("annotations", {}).get("k8s.ovn.org/pod-networks")
            if ann and p["status"].get("phase") not in ("Running", "Succeeded", "Failed"):
                key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
                for net in json.loads(ann).values():
                    for a in net.get("ip_addresses", []):
                        holders.setdefault(a.split("/")[0], []).append(key)
        ck.duplicated = [f"{ip}: {sorted(set(ks))}" for ip, ks in holders.items()
                         if len(set(ks)) > 1]
        ports: dict[str, int] = {}
        service_keys = {f"{s['metadata']['namespace']}/{s['metadata']['name']}"
                    for s in json.loads(e.kubectl("get", "services", "-A", "-o",
                                                  "json"))["items"]}
        nodes = set(self.c.s.all_nodes)
        for table in OWNED_TABLES:
            for row in nb_table(self.c, table, "external_ids"):
                ids = row["external_ids"]
                kind, owner = ids.get("k8s.ovn.org/owner-type"), ids.get("k8s.ovn.org/owner")
                gone = ((kind == "Pod" and owner not in existing)
                        or (kind == "Service" and owner not in service_keys)
                        or (kind == "Node" and owner not in nodes))
                if gone:
                    ck.leaked.append(f"{table} {ids.get('k8s.ovn.org/id', '')} ({kind} {owner})")
                if table == "Logical_Switch_Port" and kind == "Pod":
                    ports[str(owner)] = ports.get(str(owner), 0) + 1
        for p in serving:
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            if ports.get(key, 0) != 1:
                ck.portless.append(f"{key}: {ports.get(key, 0)} ports")
        for name in services:
            vip = e.get("service", name, NS)["spec"]["clusterIP"]
            for node in self.c.s.all_nodes:
                try:
                    e.curl(lambda *a, n=node: e.node_exec(n, *a), f"http://{vip}/hostname",
                           timeout=3)
                except subprocess.SubprocessError:
                    ck.unanswered.append(f"{node} {name} {vip}")
        ck.leader = lease_holder(e)
        ck.leaders = self.leading_masters()
        return ck

    def leading_masters(self) -> list[str]:
        """Identities of the live masters whose log, since they last started,
        says they became leader (and not that they lost it)."""
        out = []
        for rec in self.c.s.daemons:
            if not rec.name.startswith("ovnkube-master") or not pid_alive(rec.pid):
                continue
            text = Path(rec.log).read_text(errors="replace").rpartition(RESTART_MARK)[2]
            events = LEADERSHIP.findall(text)
            if events and events[-1][1] == "became leader":
                out.append(events[-1][0])
        return sorted(out)

    def held(self, services: tuple[str, ...] = (STEADY, SCALE), timeout: float = 90
             ) -> Check:
        """The invariants, once they hold (a fault's repair takes a moment);
        the last check if they never do."""
        last: list[Check] = []

        def ok() -> bool:
            last[:] = [self.check(services)]
            return not last[0].broken()
        with contextlib.suppress(AssertionError):
            wait_for(ok, timeout, "the invariants")
        return last[0] if last else self.check(services)  # raises what kept failing

    # --- one run -----------------------------------------------------------------

    def run_fault(self, name: str, fault: Callable[[], None], pods: int = PODS,
                  timeout: float = 600) -> dict[str, Any]:
        """Scale 0 -> pods with `fault()` striking once the first quarter of
        the pods exist; then check and scale back to 0."""
        stream = self.stream(name)
        try:
            t_start = time.monotonic()
            self.scale(pods)
            wait_for(lambda: len(self.scaled_pods()) >= max(1, pods // 4), 120,
                     "the scale-up under way")
            t_fault = time.time()
            m_fault = time.monotonic()
            fault()
            fault_s = time.monotonic() - m_fault
            up = self.wait_scaled(pods, timeout)
            peak = self.held()
            self.scale(0)
            self.wait_scaled(0, timeout)
            after = self.held((STEADY,))   # the scaled Service has no endpoints now
            gap = stream.longest_gap(since=t_fault - 1)
            failed = stream.failures(since=t_fault - 1)
            # the running pods' traffic is back (whatever the fault cost it)
            answering = wait_for(lambda: stream.answered_since(time.time() - 1), 60,
                                 "the stream answering again")
        finally:
            stream.stop()
        res = {
            "fault": name, "pods": pods, "fault_s": round(fault_s, 1),
            "ready_after_fault_s": round(up + fault_s, 1),
            "scale_total_s": round(time.monotonic() - t_start, 1),
            "stream_longest_gap_s": round(gap, 2), "stream_failures": failed,
            # pods that came up without networking (a pod that never came up
            # fails the run in wait_scaled)
            "lost": len(peak.addressless) + len(peak.portless),
            "duplicated": len(peak.duplicated) + len(after.duplicated),
            "leaked": len(after.leaked),
            "unanswered": len(peak.unanswered) + len(after.unanswered),
            "broken": peak.broken() + after.broken()
            + ([] if answering else ["the stream stopped answering"]),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(json.dumps({"date": time.strftime("%Y-%m-%d"), **res}) + "\n")
        print(f"\nchaos {name}: {pods} pods ready {res['ready_after_fault_s']} s after the "
              f"fault; stream longest gap {gap:.2f} s, {failed} failed requests; "
              f"lost {res['lost']}, duplicated {res['duplicated']}, leaked {res['leaked']}, "
              f"unanswered VIPs {res['unanswered']}")
        return res


def assert_survived(res: dict[str, Any]) -> None:
    assert res["broken"] == [], res
    assert (res["lost"], res["duplicated"], res["leaked"]) == (0, 0, 0), res


def lease_holder(e: E2E) -> str:
    lease = json.loads(e.kubectl("-n", "kube-system", "get", "lease", "ovn-kubernetes-master",
                                 "-o", "json"))
    return str(lease["spec"].get("holderIdentity") or "")
