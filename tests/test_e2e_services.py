"""Services end to end on an `ovnkube-local` cluster (no kube-proxy): ClusterIP,
NodePort, affinity, externalTrafficPolicy=Local, hairpin, the `kubernetes`
service, headless and endpoint-less services, observed as traffic.

One set of backends serves every test: two agnhost netexec pods on each node
(label half=one / half=two), one pod that never becomes ready, and a client
pod that is no backend. The cluster is IPv4-only: dual-stack is covered by the
translation unit tests only.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e_helpers import AGNHOST, E2E, wait_for

LABEL = "e2e=services"
# An address no namespace owns; the underlay routes it to a node, as a router
# in front of a real cluster would.
EXTERNAL_IP = "192.0.2.50"

# Runs inside a pod, a node or the underlay: N requests, each a new connection
# (TCP) or a new socket (UDP), printing the answers (or the error) as JSON.
PROBE = r"""
import json, socket, sys, urllib.request
host, tport, uport, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
path = sys.argv[5] if len(sys.argv) > 5 else "/hostname"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
out = {"tcp": [], "udp": []}
for _ in range(n):
    if tport:
        try:
            with opener.open(f"http://{host}:{tport}{path}", timeout=5) as r:
                out["tcp"].append(r.read().decode())
        except Exception as e:
            out["tcp"].append("ERR " + type(getattr(e, "reason", e)).__name__)
    if uport:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        try:
            s.connect((host, uport))
            s.send(b"hostname")
            out["udp"].append(s.recv(512).decode())
        except Exception as e:
            out["udp"].append("ERR " + type(e).__name__)
        finally:
            s.close()
print(json.dumps(out))
"""


def deployment(name: str, replicas: int, node: str, labels: dict[str, str],
               ready: bool = True) -> str:
    # A pod that is not ready still runs netexec; its probe asks a closed port.
    probe_port = 8080 if ready else 9999
    lab = ", ".join(f"{k}: {v}" for k, v in {"app": name, **labels}.items())
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{e2e: services}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{{lab}}}}}
    spec:
      nodeName: {node}
      containers:
      - name: agnhost
        image: {AGNHOST}
        args: ["netexec", "--http-port=8080", "--udp-port=8081"]
        readinessProbe: {{httpGet: {{path: /healthz, port: {probe_port}}}, periodSeconds: 1}}
"""


def service(name: str, selector: dict[str, str], type: str = "ClusterIP", udp: bool = True,
            extra: str = "") -> str:
    sel = ", ".join(f"{k}: {v}" for k, v in selector.items())
    ports = "  - {name: http, port: 80, targetPort: 8080, protocol: TCP}\n"
    if udp:
        ports += "  - {name: udp, port: 81, targetPort: 8081, protocol: UDP}\n"
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, labels: {{e2e: services}}}}
spec:
  type: {type}
  selector: {{{sel}}}
{extra}  ports:
{ports}"""


@dataclass
class Env:
    e: E2E
    n1: str
    n2: str
    one: list[dict[str, Any]]      # ready backends on n1
    two: list[dict[str, Any]]      # ready backends on n2
    not_ready: dict[str, Any]
    client: dict[str, Any]         # on n1, selected by no service
    svc: dict[str, dict[str, Any]]

    @property
    def backends(self) -> set[str]:
        return {p["metadata"]["name"] for p in self.one + self.two}

    def cip(self, name: str) -> str:
        return str(self.svc[name]["spec"]["clusterIP"])

    def node_port(self, name: str, port: str = "http") -> int:
        return int(next(p["nodePort"] for p in self.svc[name]["spec"]["ports"]
                        if p["name"] == port))

    def probe(self, where: Callable[..., str], host: str, tport: int, uport: int, n: int,
              path: str = "/hostname") -> dict[str, list[str]]:
        out = where("python3", "-c", PROBE, host, str(tport), str(uport), str(n), path,
                    timeout=60 + 10 * n)
        return dict(json.loads(out))

    def spread(self, where: Callable[..., str], host: str, tport: int, uport: int,
               rounds: int = 6, n: int = 20) -> dict[str, list[str]]:
        """Probe in rounds of n until every ready backend has answered each
        protocol asked for. Selection is a hash, so n tries can miss one of
        four backends (about 1% at n=20); six rounds make that negligible,
        while a backend that is never chosen still fails. An error answer
        fails at once."""
        got: dict[str, list[str]] = {"tcp": [], "udp": []}
        wanted = [k for k, port in (("tcp", tport), ("udp", uport)) if port]
        for _ in range(rounds):
            more = self.probe(where, host, tport, uport, n)
            for k in wanted:
                got[k] += more[k]
                assert set(got[k]) <= self.backends, (host, k, more[k])
            if all(set(got[k]) == self.backends for k in wanted):
                break
        return got

    def in_pod(self, pod: dict[str, Any]) -> Callable[..., str]:
        return lambda *cmd, timeout=30: self.e.pod_exec(pod, *cmd, timeout=timeout)


@pytest.fixture(scope="module")
def env(local_cluster: E2E) -> Iterator[Env]:
    e = local_cluster
    n1, n2 = e.nodes
    manifests = [
        deployment("svb-one", 2, n1, {"svc": "svb", "half": "one"}),
        deployment("svb-two", 2, n2, {"svc": "svb", "half": "two"}),
        deployment("svb-nr", 1, n2, {"svc": "svb", "half": "two"}, ready=False),
        deployment("svb-client", 1, n1, {}),
        service("svb", {"svc": "svb"}),
        service("svb-np", {"svc": "svb"}, type="NodePort"),
        service("svb-aff", {"svc": "svb"}, udp=False, extra=(
            "  sessionAffinity: ClientIP\n"
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86400}}\n")),
        service("svb-aff-timeout", {"svc": "svb"}, udp=False, extra=(
            "  sessionAffinity: ClientIP\n")),
        service("svb-local", {"svc": "svb", "half": "two"}, type="NodePort",
                extra="  externalTrafficPolicy: Local\n"),
        service("svb-lb-local", {"svc": "svb", "half": "two"}, type="LoadBalancer", udp=False,
                extra="  externalTrafficPolicy: Local\n"),
        service("svb-headless", {"svc": "svb"}, extra="  clusterIP: None\n"),
        service("svb-empty", {"svc": "nothing"}),
        service("svb-ext", {"svc": "svb"}, udp=False,
                extra=f"  externalIPs: [{EXTERNAL_IP}]\n"),
    ]
    try:
        e.apply("---\n".join(manifests))
        one = e.ready_pods("app=svb-one", 2)
        two = e.ready_pods("app=svb-two", 2)
        (client,) = e.ready_pods("app=svb-client", 1)
        (nr,) = wait_for(lambda: [p for p in e.pods("app=svb-nr")
                                  if p["status"].get("podIP")], 120, "not-ready pod running")
        svcs = {s["metadata"]["name"]: s for s in json.loads(e.kubectl(
            "get", "svc", "-l", LABEL, "-o", "json"))["items"]}
        env = Env(e, n1, n2, one, two, nr, client, svcs)
        # The endpoints of the main service are programmed.
        ips = sorted(p["status"]["podIP"] for p in one + two)
        wait_for(lambda: all(ip in e.c.nbctl("lb-list") for ip in ips), 60,
                 "backends in the load balancers")
        yield env
    finally:
        e.kubectl("delete", "deployment,service", "-l", LABEL, "--wait=false")


def _names(answers: list[str]) -> Counter[str]:
    return Counter(answers)


def test_cluster_ip_tcp_udp_across_both_nodes_not_ready_excluded(env: Env) -> None:
    nr = env.not_ready["metadata"]["name"]
    # The not-ready pod is in the EndpointSlice, but not in the load balancer.
    assert env.not_ready["status"]["podIP"] not in env.e.c.nbctl("lb-list")

    def balanced() -> dict[str, list[str]]:
        got = env.spread(env.in_pod(env.client), env.cip("svb"), 80, 81)
        assert set(got["tcp"]) == env.backends, got["tcp"]
        assert set(got["udp"]) == env.backends, got["udp"]
        return got

    got = wait_for(balanced, 90, "TCP and UDP answers from all 4 ready backends")
    assert nr not in got["tcp"] + got["udp"]
    # Both nodes' backends answer: the answers are not all from one node.
    ones = {p["metadata"]["name"] for p in env.one}
    assert ones & set(got["tcp"]) and (env.backends - ones) & set(got["tcp"])


def test_cluster_ip_from_a_node_host_reaches_local_and_remote_backends(env: Env) -> None:
    # The pod veths' host ends answer no ARP: a local backend's replies to the
    # management port go through OVN (and its un-DNAT), not into the host.
    host = lambda *c, timeout=30: env.e.node_exec(env.n1, *c, timeout=timeout)  # noqa: E731
    got = env.spread(host, env.cip("svb"), 80, 81)
    assert set(got["tcp"]) == env.backends, got["tcp"]
    assert set(got["udp"]) == env.backends, got["udp"]


def test_nodeport_first_connection_from_outside(env: Env) -> None:
    # GR_<node> has static join neighbours (dynamic_neigh_routers=false):
    # with learning, the first connection from outside was lost.
    e = env.e
    for node in (env.n1, env.n2):
        got = env.probe(e.underlay_exec, e.node_ip(node), env.node_port("svb-np"), 0, 1)
        assert got["tcp"][0] in env.backends, (node, got)


def test_nodeport_from_underlay_and_from_another_node(env: Env) -> None:
    e = env.e
    np_tcp, np_udp = env.node_port("svb-np"), env.node_port("svb-np", "udp")
    for node in (env.n1, env.n2):
        got = env.spread(e.underlay_exec, e.node_ip(node), np_tcp, np_udp)
        assert set(got["tcp"]) == env.backends, (node, got)
        assert set(got["udp"]) == env.backends, (node, got)
    # From node 1's host to node 2's address and to its own (DNATed by the host
    # to its gateway router's masquerade address).
    for target in (env.n2, env.n1):
        got = env.spread(lambda *c, timeout=30: e.node_exec(env.n1, *c, timeout=timeout),
                         e.node_ip(target), np_tcp, np_udp)
        assert set(got["tcp"]) == env.backends, (target, got)
        assert set(got["udp"]) == env.backends, (target, got)


def test_nodeport_from_the_node_itself_first_connection_and_etp_local(env: Env) -> None:
    e = env.e
    for node in (env.n1, env.n2):
        host = (lambda n: lambda *c, timeout=30: e.node_exec(n, *c, timeout=timeout))(node)
        got = env.probe(host, e.node_ip(node), env.node_port("svb-np"), 0, 1)
        assert got["tcp"][0] in env.backends, (node, got)
    # ETP=Local from node 2's host: its own endpoints only.
    host2 = lambda *c, timeout=30: e.node_exec(env.n2, *c, timeout=timeout)  # noqa: E731
    names = env.probe(host2, e.node_ip(env.n2), env.node_port("svb-local"), 0, 10)["tcp"]
    assert set(names) <= {p["metadata"]["name"] for p in env.two} and len(names) == 10, names
    # A NodePort no Service uses is refused at once, not left to time out.
    free = next(p for p in range(30000, 32768)
                if p not in {q.get("nodePort") for s in env.svc.values()
                             for q in s["spec"]["ports"]})
    with pytest.raises(subprocess.CalledProcessError) as err:
        e.node_exec(env.n1, "curl", "-sS", "-m", "10", f"http://{e.node_ip(env.n1)}:{free}/")
    assert err.value.returncode == 7, err.value.stderr


def test_client_ip_affinity_keeps_client_on_one_backend(env: Env) -> None:
    lb = env.e.c.nbctl("--bare", "--columns=selection_fields", "find", "Load_Balancer",
                       "name=Service_default/svb-aff_TCP_cluster")
    assert set(lb.split()) == {"ip_src", "ip_dst"}
    got = env.probe(env.in_pod(env.client), env.cip("svb-aff"), 80, 0, 20)["tcp"]
    assert len(set(got)) == 1 and got[0] in env.backends, got
    # Another client may land elsewhere, but also always on one backend.
    other = env.probe(env.in_pod(env.one[0]), env.cip("svb-aff"), 80, 0, 10)["tcp"]
    assert len(set(other)) == 1 and other[0] in env.backends, other


def _affinity_timeout_clients(env: Env) -> list[Callable[..., str]]:
    return [env.in_pod(env.two[0]),
            lambda *c, timeout=30: env.e.node_exec(env.n2, *c, timeout=timeout)]


def test_client_ip_affinity_with_timeout_sticks(env: Env) -> None:
    lb = env.e.c.nbctl("--bare", "--columns=options", "find", "Load_Balancer",
                       "name=Service_default/svb-aff-timeout_TCP_cluster")
    assert "affinity_timeout=10800" in lb, lb
    for client in _affinity_timeout_clients(env):
        # A new client's first connection is lost (see the xfail below); from
        # then on every connection lands on the backend OVN learned for it.
        env.probe(client, env.cip("svb-aff-timeout"), 80, 0, 1)
        got = env.probe(client, env.cip("svb-aff-timeout"), 80, 0, 8)["tcp"]
        assert len(set(got)) == 1 and got[0] in env.backends, got


@pytest.mark.xfail(strict=True, reason=(
    "OVN 23.03 drops a new client's first SYN to a Service with a timed ClientIP "
    "affinity (lb_aff_learn) and its retransmits loop on that SYN_SENT conntrack "
    "entry; a 1 s SYN_SENT timeout policy worked around it but makes OVS 3.1's "
    "userspace conntrack abort (conn_update_state assertion) once ACLs are stateful"))
def test_client_ip_affinity_with_timeout_first_connection(env: Env) -> None:
    got = env.probe(env.in_pod(env.not_ready), env.cip("svb-aff-timeout"), 80, 0, 1)["tcp"]
    assert got[0] in env.backends, got


def test_etp_local_keeps_client_ip_and_only_local_nodes_answer(env: Env) -> None:
    e = env.e
    np_ = env.node_port("svb-local")
    underlay_ip = e.c.s.ip(1)
    got = env.probe(e.underlay_exec, e.node_ip(env.n2), np_, 0, 10, "/clientip")["tcp"]
    assert {a.rsplit(":", 1)[0] for a in got} == {underlay_ip}, got
    names = env.probe(e.underlay_exec, e.node_ip(env.n2), np_, 0, 10)["tcp"]
    assert set(names) <= {p["metadata"]["name"] for p in env.two}, names
    # Node 1 has no local endpoint: refused at once (curl 7), not a timeout (28).
    with pytest.raises(subprocess.CalledProcessError) as err:
        e.underlay_exec("curl", "-sS", "-m", "10", f"http://{e.node_ip(env.n1)}:{np_}/")
    assert err.value.returncode == 7, err.value.stderr


def test_health_check_node_port_answers_as_kube_proxy_does(env: Env) -> None:
    """A load balancer asks each node's healthCheckNodePort: 200 where the
    Service has ready endpoints (n2), 503 where it has none (n1), from
    outside (through br-ex) and from a pod (to its own node)."""
    e = env.e
    port = int(env.svc["svb-lb-local"]["spec"]["healthCheckNodePort"])

    def ask(where: Callable[..., str], node: str) -> tuple[str, dict[str, Any]]:
        out = where("curl", "-s", "-m", "5", "-w", "\n%{http_code}",
                    f"http://{e.node_ip(node)}:{port}/healthz")
        body, code = out.rsplit("\n", 1)
        return code, json.loads(body)

    def settled(where: Callable[..., str], node: str, code: str, count: int) -> bool:
        try:
            got = ask(where, node)
        except (subprocess.CalledProcessError, ValueError):
            return False
        return got[0] == code and got[1]["localEndpoints"] == count

    wait_for(lambda: settled(e.underlay_exec, env.n2, "200", 2), 60, "n2's health check")
    code, body = ask(e.underlay_exec, env.n2)
    assert code == "200"
    assert body == {"service": {"namespace": "default", "name": "svb-lb-local"},
                    "localEndpoints": 2, "serviceProxyHealthy": True}
    wait_for(lambda: settled(e.underlay_exec, env.n1, "503", 0), 60, "n1's health check")
    assert settled(env.in_pod(env.client), env.n1, "503", 0)


def test_hairpin_pod_reaches_itself_through_its_service(env: Env) -> None:
    pod = env.two[0]
    me = pod["metadata"]["name"]
    # spread() fails on any error answer and on answers from no backend.
    got = env.spread(env.in_pod(pod), env.cip("svb"), 80, 81)
    assert me in got["tcp"] and me in got["udp"], got


def test_pod_to_kubernetes_service_reaches_apiserver(env: Env) -> None:
    for pod in (env.client, env.two[0]):
        assert env.e.curl(env.in_pod(pod), "https://10.96.0.1/healthz", "-k") == "ok"


def test_headless_makes_no_lb_and_no_endpoints_rejects(env: Env) -> None:
    names = env.e.c.nbctl("--bare", "--columns=name", "list", "Load_Balancer").split()
    assert not [n for n in names if n.startswith("Service_default/svb-headless")]
    assert "Service_default/svb-empty_TCP_cluster" in names
    # TCP: refused (curl exit 7), not a timeout (28).
    with pytest.raises(subprocess.CalledProcessError) as err:
        env.e.pod_exec(env.client, "curl", "-sS", "-m", "10", f"http://{env.cip('svb-empty')}/")
    assert err.value.returncode == 7, err.value.stderr
    # UDP: ICMP port unreachable -> ConnectionRefusedError, not a timeout.
    got = env.probe(env.in_pod(env.client), env.cip("svb-empty"), 0, 81, 1)["udp"]
    assert got == ["ERR ConnectionRefusedError"], got


def test_external_ip_from_outside(env: Env) -> None:
    e = env.e
    for node in (env.n1, env.n2):
        # The outside world's router sends the external IP to one node...
        e.underlay_exec("ip", "route", "replace", f"{EXTERNAL_IP}/32", "via", e.node_ip(node))
        try:
            got = env.spread(e.underlay_exec, EXTERNAL_IP, 80, 0)["tcp"]
            # ...whose br-ex hands it to OVN, which balances over every backend.
            assert set(got) == env.backends, (node, got)
        finally:
            e.underlay_exec("ip", "route", "del", f"{EXTERNAL_IP}/32")


UDP_CLIENT = r"""
import socket, sys, time
host, port, want, deadline = sys.argv[1], int(sys.argv[2]), sys.argv[3], time.time() + 90
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40123))  # one source port throughout, as a long-lived UDP client
s.settimeout(0.5)
seen = []
while time.time() < deadline:
    s.sendto(b"hostname", (host, port))
    try:
        got = s.recv(512).decode()
    except OSError:
        got = "-"
    if not seen or seen[-1] != got:
        seen.append(got)
    if got == want:
        break
    time.sleep(0.2)
print(" ".join(seen))
"""


def test_udp_client_follows_a_replaced_endpoint(env: Env) -> None:
    """A UDP client that never changes its source port keeps its conntrack
    entry alive; when its endpoint goes, the node agent removes the entry
    and the client reaches the new endpoint (the upstream Conntrack tests)."""
    e = env.e
    pod = f"""apiVersion: v1
kind: Pod
metadata: {{name: NAME, labels: {{e2e: services, udp: cycle}}}}
spec:
  nodeName: {env.n2}
  containers:
  - {{name: agnhost, image: {AGNHOST}, args: ["netexec", "--http-port=8080", "--udp-port=8081"]}}
"""
    e.apply(pod.replace("NAME", "udp-a") + "---\n" + service("svb-udp", {"udp": "cycle"}))
    try:
        e.ready_pods("udp=cycle", 1)
        cip = json.loads(e.kubectl("get", "svc", "svb-udp", "-o", "json"))["spec"]["clusterIP"]
        wait_for(lambda: env.probe(env.in_pod(env.client), cip, 0, 81, 1)["udp"] == ["udp-a"],
                 60, "udp-a answering")
        # The client settles on udp-a, then keeps sending while b replaces a.
        client = subprocess.Popen(
            ["ip", "netns", "exec", e.c.pod_netns(env.n1, env.client["metadata"]["uid"]),
             "python3", "-c", UDP_CLIENT, cip, "81", "udp-b"],
            stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
            e.kubectl("delete", "pod", "udp-a", "--grace-period=0", "--force")
            e.apply(pod.replace("NAME", "udp-b"))
            out, _ = client.communicate(timeout=120)
        finally:
            if client.poll() is None:
                client.kill()
        seen = out.split()
        assert seen[0] == "udp-a" and seen[-1] == "udp-b", seen
    finally:
        e.kubectl("delete", "pod,svc", "-l", "udp=cycle", "--wait=false")
        e.kubectl("delete", "svc", "svb-udp", "--wait=false")


def test_nodeport_with_a_host_network_endpoint_from_everywhere(env: Env) -> None:
    """A NodePort Service whose one endpoint is a host-network pod on node 1
    answers entered at node 1's own address (its gateway router owns that
    address too) and at node 2's, from outside, from both hosts and from a
    pod on each node, over TCP and UDP, and so does its external IP routed
    to either node: each gateway router reaches the endpoint through node
    1's management port (the upstream Networking Granular Checks spec
    "should function for service endpoints using hostNetwork")."""
    e = env.e
    pod = f"""apiVersion: v1
kind: Pod
metadata: {{name: svb-hostnet, labels: {{e2e: services, hostnet: np}}}}
spec:
  nodeName: {env.n1}
  hostNetwork: true
  containers:
  - name: agnhost
    image: {AGNHOST}
    args: ["netexec", "--http-port=18080", "--udp-port=18081"]
    readinessProbe: {{httpGet: {{path: /healthz, port: 18080}}, periodSeconds: 1}}
"""
    ext = "192.0.2.51"  # as EXTERNAL_IP, another Service's
    svc = service("svb-hostnet", {"hostnet": "np"}, type="NodePort",
                  extra=f"  externalIPs: [{ext}]\n").replace(
        "targetPort: 8080", "targetPort: 18080").replace("targetPort: 8081", "targetPort: 18081")
    e.apply(pod + "---\n" + svc)
    try:
        e.ready_pods("hostnet=np", 1)
        spec = json.loads(e.kubectl("get", "svc", "svb-hostnet", "-o", "json"))["spec"]
        ports = {p["name"]: int(p["nodePort"]) for p in spec["ports"]}
        clients = {"underlay": e.underlay_exec, f"{env.n1} host": _on_host(e, env.n1),
                   f"{env.n2} host": _on_host(e, env.n2), "pod on n1": env.in_pod(env.client),
                   "pod on n2": env.in_pod(env.two[0])}
        want = {"tcp": [env.n1] * 3, "udp": [env.n1] * 3}
        for target in (env.n1, env.n2):
            ip = e.node_ip(target)
            for name, where in clients.items():
                seen: list[dict[str, list[str]]] = []

                def answers(where: Callable[..., str] = where, ip: str = ip,
                            seen: list[dict[str, list[str]]] = seen) -> bool:
                    seen[:] = [env.probe(where, ip, ports["http"], ports["udp"], 3)]
                    return seen[0] == want
                try:
                    wait_for(answers, 60, f"{ip} (node {target}) answering the {name}")
                except AssertionError as err:
                    raise AssertionError(f"{err}; last answers {seen}") from None
            # The external IP, routed from outside to this node.
            e.underlay_exec("ip", "route", "replace", f"{ext}/32", "via", ip)
            try:
                wait_for(lambda: env.probe(e.underlay_exec, ext, 80, 81, 3) == want, 30,
                         f"{ext} routed to {target} answering")
            finally:
                e.underlay_exec("ip", "route", "del", f"{ext}/32")
    finally:
        e.kubectl("delete", "pod,svc", "-l", "hostnet=np", "--wait=false")
        e.kubectl("delete", "svc", "svb-hostnet", "--wait=false")


def _on_host(e: E2E, node: str) -> Callable[..., str]:
    return lambda *c, timeout=30: e.node_exec(node, *c, timeout=timeout)
