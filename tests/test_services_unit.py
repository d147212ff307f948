"""Service + EndpointSlices in, load balancer rows out (pure translation)."""

from __future__ import annotations

from typing import Any

from northd_sync.rows import LoadBalancer
from ovnkube.master.services import endpoints_for_port, service_rows


def svc(name: str = "web", ns: str = "default", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                            "clusterIPs": ["10.96.0.10"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                       "targetPort": 8080}]}
    base.update(spec)
    return {"metadata": {"namespace": ns, "name": name}, "spec": base}


def eps(*items: tuple[str, str | None, bool], port: int = 8080, pname: str = "http",
        proto: str = "TCP", **cond: bool) -> dict[str, Any]:
    return {"addressType": "IPv4", "ports": [{"name": pname, "port": port, "protocol": proto}],
            "endpoints": [{"addresses": [ip], "nodeName": node,
                           "conditions": {"ready": ready, **cond}}
                          for ip, node, ready in items]}


def lbs(rows: list[Any]) -> dict[str, LoadBalancer]:
    return {r.name: r for r in rows if isinstance(r, LoadBalancer)}


def test_cluster_ip_ready_endpoints_only() -> None:
    rows = lbs(service_rows(svc(), [eps(("10.244.1.5", "n1", True), ("10.244.2.5", "n2", True),
                                        ("10.244.2.6", "n2", False))], {}))
    lb = rows["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.1.5:8080,10.244.2.5:8080"}
    assert lb.protocol == "tcp" and lb.groups == ("clusterLBGroup",)
    assert lb.options["reject"] == "true" and lb.options["event"] == "false"
    assert lb.external_ids["k8s.ovn.org/kind"] == "Service"


def test_no_endpoints_rejects() -> None:
    lb = lbs(service_rows(svc(), [], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": ""} and lb.options["reject"] == "true"


def test_terminating_serving_used_when_none_ready() -> None:
    sl = eps(("10.244.1.5", "n1", False), serving=True, terminating=True)
    lb = lbs(service_rows(svc(), [sl], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.1.5:8080"}


def test_protocols_and_several_ports() -> None:
    s = svc(ports=[{"name": "a", "port": 80, "protocol": "TCP"},
                   {"name": "b", "port": 81, "protocol": "TCP"},
                   {"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "s", "port": 9, "protocol": "SCTP"}])
    slices = [eps(("10.244.1.5", "n1", True), pname="a", port=8080),
              eps(("10.244.1.5", "n1", True), pname="b", port=8081),
              eps(("10.244.1.5", "n1", True), pname="dns", port=5353, proto="UDP"),
              eps(("10.244.1.5", "n1", True), pname="s", port=99, proto="SCTP")]
    rows = lbs(service_rows(s, slices, {}))
    assert rows["Service_default/web_TCP_cluster"].vips == {
        "10.96.0.10:80": "10.244.1.5:8080", "10.96.0.10:81": "10.244.1.5:8081"}
    assert rows["Service_default/web_UDP_cluster"].vips == {"10.96.0.10:53": "10.244.1.5:5353"}
    assert rows["Service_default/web_UDP_cluster"].protocol == "udp"
    assert rows["Service_default/web_SCTP_cluster"].protocol == "sctp"


def test_named_target_port_resolved_per_slice() -> None:
    # Two slices for one service port name with different resolved numbers.
    slices = [eps(("10.244.1.5", "n1", True), port=8080), eps(("10.244.2.5", "n2", True),
                                                              port=9090)]
    lb = lbs(service_rows(svc(), slices, {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.1.5:8080,10.244.2.5:9090"}


def test_headless_and_external_name_make_nothing() -> None:
    assert service_rows(svc(clusterIP="None", clusterIPs=["None"]), [], {}) == []
    assert service_rows(svc(type="ExternalName", clusterIP=None, clusterIPs=None), [], {}) == []


def test_nodeport_on_every_node_router() -> None:
    s = svc(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP",
                                     "nodePort": 30080}])
    sl = eps(("10.244.1.5", "n1", True), ("10.244.2.5", "n2", True))
    rows = lbs(service_rows(s, [sl], {"n1": ["172.18.0.10"], "n2": ["172.18.0.11"]}))
    n1 = rows["Service_default/web_TCP_node_router_n1"]
    assert n1.vips == {"172.18.0.10:30080": "10.244.1.5:8080,10.244.2.5:8080"}
    assert n1.routers == ("GR_n1",) and "skip_snat" not in n1.options
    assert rows["Service_default/web_TCP_cluster"].vips == {
        "10.96.0.10:80": "10.244.1.5:8080,10.244.2.5:8080"}


def test_etp_local_only_local_endpoints_and_no_snat() -> None:
    s = svc(type="LoadBalancer", externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    sl = eps(("10.244.1.5", "n1", True), ("10.244.2.5", "n2", True))
    rows = lbs(service_rows(s, [sl], {"n1": ["172.18.0.10"], "n2": ["172.18.0.11"]}))
    n1 = rows["Service_default/web_TCP_node_router_n1"]
    assert n1.vips == {"172.18.0.10:30080": "10.244.1.5:8080", "192.0.2.10:80": "10.244.1.5:8080"}
    assert n1.options["skip_snat"] == "true"
    # The ClusterIP still reaches every endpoint.
    assert rows["Service_default/web_TCP_cluster"].vips == {
        "10.96.0.10:80": "10.244.1.5:8080,10.244.2.5:8080"}


def test_external_ips_and_lb_ingress_cluster_policy() -> None:
    s = svc(type="LoadBalancer", externalIPs=["192.0.2.1"],
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    lb = lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))], {}))[
        "Service_default/web_TCP_cluster"]
    assert set(lb.vips) == {"10.96.0.10:80", "192.0.2.1:80", "192.0.2.10:80"}


def test_itp_local_per_node_switch() -> None:
    s = svc(internalTrafficPolicy="Local")
    sl = eps(("10.244.1.5", "n1", True), ("10.244.2.5", "n2", True))
    rows = lbs(service_rows(s, [sl], {"n1": ["172.18.0.10"], "n2": ["172.18.0.11"]}))
    assert "Service_default/web_TCP_cluster" not in rows
    n2 = rows["Service_default/web_TCP_node_switch_n2"]
    assert n2.vips == {"10.96.0.10:80": "10.244.2.5:8080"} and n2.switches == ("n2",)


def test_session_affinity_timeout() -> None:
    s = svc(sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    lb = lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))], {}))[
        "Service_default/web_TCP_cluster"]
    assert lb.options["affinity_timeout"] == "60"
    s = svc(sessionAffinity="ClientIP")
    lb = lbs(service_rows(s, [], {}))["Service_default/web_TCP_cluster"]
    assert lb.options["affinity_timeout"] == "10800"


def test_dual_stack_families_kept_apart() -> None:
    s = svc(clusterIPs=["10.96.0.10", "fd00:10:96::a"], ipFamilies=["IPv4", "IPv6"])
    v4 = eps(("10.244.1.5", "n1", True))
    v6 = eps(("fd00:10:244:1::5", "n1", True))
    v6["addressType"] = "IPv6"
    lb = lbs(service_rows(s, [v4, v6], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.1.5:8080",
                       "[fd00:10:96::a]:80": "[fd00:10:244:1::5]:8080"}


def test_endpoints_deduplicated() -> None:
    sl = eps(("10.244.1.5", "n1", True))
    got = endpoints_for_port({"name": "http", "protocol": "TCP"}, [sl, sl])
    assert len(got) == 1
