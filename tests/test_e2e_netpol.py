"""NetworkPolicy end to end on an `ovnkube-local` cluster, judged by traffic.

As the upstream netpol suite does: namespaces x, y, z with pods a, b, c each
(a and c on one node, b on the other), every pod serving TCP and UDP on ports
80 and 81 (one agnhost netexec container per port, ports named
serve-<port>-<proto>). For each case the whole reachability matrix (every pod
to every pod, on the ports the case is about) is probed until it is what
networking.k8s.io/v1 says, or the case fails naming the pairs that differ.
A pod always reaches itself (that traffic never leaves its namespace).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ovnkube import names
from tests.e2e_helpers import AGNHOST, E2E, wait_for
from tests.waiting import eventually

NAMES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL_PORTS = ((80, "tcp"), (81, "tcp"), (80, "udp"), (81, "udp"))
TCP80 = ((80, "tcp"),)
IDLE_WAIT = 11.0  # s between mismatched rounds: past OVS's 10 s datapath flow idle time

# Runs in a source pod: try every (ip, port, proto) at once, print verdicts.
PROBE = r"""
import json, socket, sys, concurrent.futures as cf
targets = json.loads(sys.argv[1])
def one(t):
    ip, port, proto = t
    if proto == "tcp":
        try:
            socket.create_connection((ip, port), timeout=2.5).close()
            return True
        except OSError:
            return False
    for _ in range(2):  # a lost datagram is not a verdict
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1.2)
        try:
            s.connect((ip, port))
            s.send(b"hostname")
            if s.recv(512):
                return True
        except OSError:
            pass
        finally:
            s.close()
    return False
with cf.ThreadPoolExecutor(len(targets) or 1) as ex:
    print(json.dumps(list(ex.map(one, targets))))
"""

Key = tuple[str, str, int, str]  # (source pod, destination, port, proto); pods as "x/a"
Expect = Callable[[str, str, int, str], bool]


def pod_manifest(ns: str, name: str, node: str) -> str:
    containers = "".join(f"""
  - name: c{port}
    image: {AGNHOST}
    args: ["netexec", "--http-port={port}", "--udp-port={port}"]
    ports:
    - {{name: serve-{port}-tcp, containerPort: {port}, protocol: TCP}}
    - {{name: serve-{port}-udp, containerPort: {port}, protocol: UDP}}
    readinessProbe: {{httpGet: {{path: /healthz, port: {port}}}, periodSeconds: 1}}"""
                         for port in (80, 81))
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{pod: {name}, e2e: netpol}}}}
spec:
  nodeName: {node}
  containers:{containers}
"""


@dataclass
class Env:
    e: E2E
    ns: dict[str, str]               # x -> x-1a2b
    pods: dict[str, dict[str, Any]]  # "x/a" -> pod
    ip: dict[str, str]

    def pod(self, short: str) -> dict[str, Any]:
        return self.pods[short]

    def policy(self, short_ns: str, name: str, spec: str) -> None:
        self.e.apply(f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}}}
spec:
{spec}""", self.ns[short_ns])
        pg = names.policy_pg_name(self.ns[short_ns], name)
        self.converged(lambda names: pg in names, f"port group of {name}")

    def clear(self) -> None:
        for ns in self.ns.values():
            self.e.kubectl("delete", "networkpolicy", "--all", "-n", ns)
        gone = {names.deny_pg_name(ns, d) for ns in self.ns.values()
                for d in ("Ingress", "Egress")}
        self.converged(lambda names: not gone & names, "policies removed")

    def converged(self, nb_state: Callable[[set[str]], bool], what: str) -> None:
        """Wait until the NB shows a change, then until every ovn-controller
        has it: probing while flows change can leave the userspace datapath
        with a stale flow for a pair that is retried without pause (see
        docs/NETWORKPOLICY.md)."""
        wait_for(lambda: nb_state(set(self.e.c.nbctl(
            "--bare", "--columns=name", "list", "Port_Group").split())), 30, what)
        self.e.c.nbctl("--timeout=30", "--wait=hv", "sync")

    def run_in(self, short: str, targets: list[tuple[str, int, str]]) -> list[bool]:
        out = self.e.pod_exec(self.pods[short], "python3", "-c", PROBE, json.dumps(targets),
                              timeout=60)
        return list(json.loads(out))

    def matrix(self, ports: tuple[tuple[int, str], ...],
               dsts: tuple[str, ...] | None = None) -> dict[Key, bool]:
        dsts = dsts or tuple(self.pods)
        keys = [(d, p, proto) for d in dsts for p, proto in ports]

        def from_(src: str) -> list[tuple[Key, bool]]:
            got = self.run_in(src, [(self.ip[d], p, proto) for d, p, proto in keys])
            return [((src, d, p, proto), ok) for (d, p, proto), ok in zip(keys, got, strict=True)]
        with cf.ThreadPoolExecutor(len(self.pods)) as ex:
            return dict(kv for part in ex.map(from_, self.pods) for kv in part)

    def expect(self, rule: Expect, ports: tuple[tuple[int, str], ...] = TCP80,
               dsts: tuple[str, ...] | None = None, timeout: float = 60) -> None:
        """Probe until the matrix is what `rule` says (self always allowed).

        Rounds after a mismatch wait out the datapath's 10 s flow idle time:
        on the userspace datapath a cached drop flow of a pair retried without
        pause can outlive the policy that allowed it (docs/NETWORKPOLICY.md)."""
        last: dict[str, Any] = {}

        def matches() -> bool:
            got = self.matrix(ports, dsts)
            want = {k: k[0] == k[1] or rule(*k) for k in got}
            last["diff"] = sorted(f"{k[0]}->{k[1]}:{k[2]}/{k[3]} got {got[k]} want {want[k]}"
                                  for k in got if got[k] != want[k])
            return not last["diff"]
        try:
            eventually(matches, timeout, "reachability matrix", interval=IDLE_WAIT)
        except AssertionError:
            pytest.fail("reachability differs:\n  " + "\n  ".join(last.get("diff", [])))


@pytest.fixture(scope="module")
def env(local_cluster: E2E) -> Iterator[Env]:
    e = local_cluster
    n1, n2 = e.nodes
    suffix = secrets.token_hex(2)
    ns = {n: f"{n}-{suffix}" for n in NAMES}
    try:
        for short, full in ns.items():
            e.kubectl("create", "namespace", full)
            e.kubectl("label", "namespace", full, f"ns={short}")
        for n in NAMES:
            e.apply("---\n".join(pod_manifest(ns[n], p, n2 if p == "b" else n1)
                                 for p in PODS), ns[n])
        pods: dict[str, dict[str, Any]] = {}
        for n in NAMES:
            for p in e.ready_pods("e2e=netpol", 3, namespace=ns[n], timeout=180):
                pods[f"{n}/{p['metadata']['name']}"] = p
        env = Env(e, ns, pods, {k: p["status"]["podIP"] for k, p in pods.items()})
        yield env
    finally:
        e.kubectl("delete", "namespace", *ns.values(), "--wait=false")


def ns_of(pod: str) -> str:
    return pod.split("/")[0]


def test_no_policy_everything_reaches_everything(env: Env) -> None:
    env.clear()
    env.expect(lambda s, d, p, pr: True, ALL_PORTS)


def test_default_deny_ingress_and_pods_stay_ready(env: Env) -> None:
    env.clear()
    env.policy("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress]\n")
    env.expect(lambda s, d, p, pr: ns_of(d) != "x", ALL_PORTS)
    # Replies to x's own connections come back (stateful), as the matrix
    # shows for x -> y; and kubelet probes through the management port pass.
    time.sleep(3)
    for n in ("x/a", "x/b", "x/c"):
        pod = env.e.get("pod", n.split("/")[1], env.ns["x"])
        assert any(c["type"] == "Ready" and c["status"] == "True"
                   for c in pod["status"]["conditions"]), n


def test_pod_selector_namespace_selector_and_vs_or(env: Env) -> None:
    env.clear()
    env.policy("x", "from-b", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or s == "x/b")

    env.clear()
    env.policy("x", "from-y", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or ns_of(s) == "y")

    env.clear()  # both in one peer: AND
    env.policy("x", "and", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: c}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or s == "y/c")

    env.clear()  # two peers: OR
    env.policy("x", "or", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}, {podSelector: {matchLabels: {pod: c}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or ns_of(s) == "y" or s == "x/c")


def test_match_expressions(env: Env) -> None:
    env.clear()
    env.policy("x", "expr", """  podSelector:
    matchExpressions: [{key: pod, operator: In, values: [a, b]}]
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: ["y"]}]}
      podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
""")
    env.expect(lambda s, d, p, pr: d not in ("x/a", "x/b") or ns_of(s) != "y")


def test_ports_protocols_named_ports_and_ranges(env: Env) -> None:
    dsts = ("x/a",)
    env.clear()
    env.policy("x", "tcp81", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{port: 81, protocol: TCP}]
""")
    env.expect(lambda s, d, p, pr: (p, pr) == (81, "tcp"), ALL_PORTS, dsts)

    env.clear()
    env.policy("x", "named", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{port: serve-80-udp, protocol: UDP}]
""")
    env.expect(lambda s, d, p, pr: (p, pr) == (80, "udp"), ALL_PORTS, dsts)

    env.clear()
    env.policy("x", "range", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{port: 80, endPort: 81, protocol: TCP}]
""")
    env.expect(lambda s, d, p, pr: pr == "tcp", ALL_PORTS, dsts)

    env.clear()  # protocol only
    env.policy("x", "udp", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{protocol: UDP}]
""")
    env.expect(lambda s, d, p, pr: pr == "udp", ALL_PORTS, dsts)


def test_egress_deny_and_allow_to_a_namespace(env: Env) -> None:
    env.clear()
    env.policy("x", "deny-out", "  podSelector: {}\n  policyTypes: [Egress]\n")
    env.expect(lambda s, d, p, pr: ns_of(s) != "x", ((80, "tcp"), (80, "udp")))
    env.policy("x", "a-to-y", """  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: serve-81-tcp}]
""")
    env.expect(lambda s, d, p, pr: ns_of(s) != "x" or (
        s == "x/a" and ns_of(d) == "y" and (p, pr) == (81, "tcp")), ALL_PORTS)


def test_ip_block_with_except(env: Env) -> None:
    env.clear()
    env.policy("x", "cidr", f"""  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: ["{env.ip['y/b']}/32"]}}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or s != "y/b")


def test_policies_combine_as_a_union(env: Env) -> None:
    env.clear()
    env.policy("x", "from-b", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
""")
    env.policy("x", "from-z", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "z"}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or s == "x/b" or ns_of(s) == "z")


def test_label_changes_while_traffic_runs(env: Env) -> None:
    env.clear()
    env.policy("x", "from-b", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}, {namespaceSelector: {matchLabels: {ns: "y"}}}]
""")
    env.expect(lambda s, d, p, pr: d != "x/a" or s == "x/b" or ns_of(s) == "y")
    x, z = env.ns["x"], env.ns["z"]
    try:
        env.e.kubectl("label", "pod", "c", "-n", x, "pod=b", "--overwrite")
        env.e.kubectl("label", "namespace", z, "ns=y", "--overwrite")
        env.expect(lambda s, d, p, pr: d != "x/a" or s in ("x/b", "x/c") or ns_of(s) != "x")
    finally:
        env.e.kubectl("label", "pod", "c", "-n", x, "pod=c", "--overwrite")
        env.e.kubectl("label", "namespace", z, "ns=z", "--overwrite")
    env.expect(lambda s, d, p, pr: d != "x/a" or s == "x/b" or ns_of(s) == "y")
    # The policy's own pod selector: x/a leaves it and is open again.
    try:
        env.e.kubectl("label", "pod", "a", "-n", x, "pod=aa", "--overwrite")
        env.expect(lambda s, d, p, pr: True)
    finally:
        env.e.kubectl("label", "pod", "a", "-n", x, "pod=a", "--overwrite")


def service(env: Env, short_ns: str, pod: str) -> str:
    name = f"svc-{pod}"
    env.e.apply(f"""apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  selector: {{pod: {pod}}}
  ports: [{{name: http, port: 8000, targetPort: 80, protocol: TCP}}]
""", env.ns[short_ns])
    svc = env.e.get("service", name, env.ns[short_ns])
    ip = str(svc["spec"]["clusterIP"])
    wait_for(lambda: env.ip[f"{short_ns}/{pod}"] in env.e.c.nbctl("lb-list"), 60,
             f"{name} backends")
    return ip


def test_policies_apply_to_service_backends_and_hairpin(env: Env) -> None:
    env.clear()
    xa, ya = service(env, "x", "a"), service(env, "y", "a")

    def via(src: str, vip: str) -> bool:
        return env.run_in(src, [(vip, 8000, "tcp")])[0]
    env.policy("x", "from-b", """  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
""")
    # Ingress: what x/a sees is the client, after load balancing.
    wait_for(lambda: via("x/b", xa) and not via("x/c", xa) and not via("y/b", xa), 45,
             "Service x/a open to x/b only")
    # Hairpin: x/a reaches itself through its own Service.
    assert via("x/a", xa)
    # Egress after load balancing: x/c may only talk to y's pods, so y/a's
    # Service works and x/a's does not.
    env.policy("x", "c-out", """  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
""")
    wait_for(lambda: via("x/c", ya) and not via("x/c", xa), 45, "x/c egress to y only")
    env.policy("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress]\n")
    time.sleep(2)  # let deny-all land; hairpin stays open, x/b still allowed
    assert via("x/a", xa) and via("x/b", xa) and not via("x/c", xa)


def test_acl_logging_names_the_policy_in_ovn_controller_log(env: Env) -> None:
    env.clear()
    x = env.ns["x"]
    env.e.kubectl("annotate", "namespace", x, "--overwrite",
                  'k8s.ovn.org/acl-logging={"deny": "alert", "allow": "notice"}')
    try:
        env.policy("x", "deny-all", "  podSelector: {}\n  policyTypes: [Ingress]\n")
        env.expect(lambda s, d, p, pr: ns_of(d) != "x", dsts=("x/a",))
        node = env.pods["x/a"]["spec"]["nodeName"]

        def logged() -> bool:
            env.run_in("y/a", [(env.ip["x/a"], 80, "tcp")])
            text = env.e.ovn_controller_log(node)
            return f'name="NP:{x}:Ingress", verdict=drop, severity=alert' in text
        wait_for(logged, 30, "drop logged by ovn-controller")
    finally:
        env.e.kubectl("annotate", "namespace", x, "k8s.ovn.org/acl-logging-")
