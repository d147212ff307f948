"""Service + EndpointSlices in, load balancer rows out (pure translation)."""

from __future__ import annotations

from typing import Any

from northd_sync.rows import LoadBalancer
from ovnkube.master.translate.service import endpoints_for_port, service_rows


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


def test_ready_terminating_endpoint_is_used_publish_not_ready_addresses() -> None:
    # With publishNotReadyAddresses the EndpointSlice controller marks every
    # endpoint ready, terminating and not serving ones too: kube-proxy uses them.
    sl = eps(("10.244.1.5", "n1", True), serving=False, terminating=True)
    lb = lbs(service_rows(svc(), [sl], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.1.5:8080"}


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


def test_services_of_another_proxy_make_nothing() -> None:
    sl = eps(("10.244.1.5", "n1", True))
    for label in ("service.kubernetes.io/headless", "service.kubernetes.io/service-proxy-name"):
        s = svc()
        s["metadata"]["labels"] = {label: "foo-bar"}
        assert service_rows(s, [sl], {}) == []
    assert service_rows(svc(), [sl], {}) != []


def test_nodeport_on_every_node_router() -> None:
    s = svc(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP",
                                     "nodePort": 30080}])
    sl = eps(("10.244.1.5", "n1", True), ("10.244.2.5", "n2", True))
    rows = lbs(service_rows(s, [sl], {"n1": ["172.18.0.10"], "n2": ["172.18.0.11"]}))
    n1 = rows["Service_default/web_TCP_node_router_n1"]
    # The masquerade VIP is where the node's own host reaches its NodePorts.
    assert n1.vips == {"172.18.0.10:30080": "10.244.1.5:8080,10.244.2.5:8080",
                       "169.254.169.1:30080": "10.244.1.5:8080,10.244.2.5:8080"}
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
    assert n1.vips == {"172.18.0.10:30080": "10.244.1.5:8080",
                       "169.254.169.1:30080": "10.244.1.5:8080",
                       "192.0.2.10:80": "10.244.1.5:8080"}
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


# --- more cases: every behaviour of issue 7 -----------------------------------------

NODES = {"n1": ["172.18.0.10"], "n2": ["172.18.0.11"]}


def test_udp_cluster_ip_and_empty_port_name() -> None:
    s = svc(ports=[{"port": 53, "protocol": "UDP", "targetPort": 5353}])
    sl = eps(("10.244.1.5", "n1", True), pname="", port=5353, proto="UDP")
    rows = lbs(service_rows(s, [sl], {}))
    assert set(rows) == {"Service_default/web_UDP_cluster"}
    assert rows["Service_default/web_UDP_cluster"].vips == {"10.96.0.10:53": "10.244.1.5:5353"}


def test_port_of_other_protocol_or_name_not_used() -> None:
    # A slice port with the same name but another protocol, and one with another
    # name, resolve nothing for the TCP "http" port.
    sl = {"addressType": "IPv4",
          "ports": [{"name": "http", "port": 9999, "protocol": "UDP"},
                    {"name": "other", "port": 7777, "protocol": "TCP"}],
          "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}]}
    lb = lbs(service_rows(svc(), [sl], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": ""}


def test_unknown_readiness_counts_as_ready_and_fqdn_slices_ignored() -> None:
    sl = {"addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
          "endpoints": [{"addresses": ["10.244.1.5"]},               # no conditions
                        {"addresses": ["10.244.1.6"], "conditions": {"ready": None}}]}
    fqdn = {"addressType": "FQDN", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["example.com"]}]}
    lb = lbs(service_rows(svc(), [sl, fqdn], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.1.5:8080,10.244.1.6:8080"}


def test_terminating_not_serving_never_used_and_ready_preferred() -> None:
    term = eps(("10.244.1.7", "n1", False), serving=False, terminating=True)
    assert lbs(service_rows(svc(), [term], {}))["Service_default/web_TCP_cluster"].vips == {
        "10.96.0.10:80": ""}
    serving = eps(("10.244.1.8", "n1", False), serving=True, terminating=True)
    ready = eps(("10.244.2.5", "n2", True))
    lb = lbs(service_rows(svc(), [serving, ready], {}))["Service_default/web_TCP_cluster"]
    assert lb.vips == {"10.96.0.10:80": "10.244.2.5:8080"}


def test_kubernetes_service_endpoint_without_node() -> None:
    s = svc("kubernetes", clusterIP="10.96.0.1", clusterIPs=["10.96.0.1"],
            ports=[{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}])
    sl = eps(("172.18.0.2", None, True), pname="https", port=6443)
    rows = lbs(service_rows(s, [sl], NODES))
    assert set(rows) == {"Service_default/kubernetes_TCP_cluster"}
    assert rows["Service_default/kubernetes_TCP_cluster"].vips == {
        "10.96.0.1:443": "172.18.0.2:6443"}


def test_headless_with_endpoints_and_external_name_with_ports_make_nothing() -> None:
    sl = eps(("10.244.1.5", "n1", True))
    assert service_rows(svc(clusterIP="None", clusterIPs=["None"], type="ClusterIP"),
                        [sl], NODES) == []
    assert service_rows(svc(type="ExternalName", externalName="example.com", clusterIP="",
                            clusterIPs=None), [sl], NODES) == []


def test_nodeport_udp_and_several_node_ips_per_family() -> None:
    s = svc(type="NodePort", clusterIPs=["10.96.0.10", "fd00:10:96::a"],
            ports=[{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    v4 = eps(("10.244.1.5", "n1", True), pname="dns", port=5353, proto="UDP")
    v6 = eps(("fd00:10:244:1::5", "n1", True), pname="dns", port=5353, proto="UDP")
    v6["addressType"] = "IPv6"
    rows = lbs(service_rows(s, [v4, v6], {"n1": ["172.18.0.10", "fc00:f853::10"]}))
    n1 = rows["Service_default/web_UDP_node_router_n1"]
    assert n1.protocol == "udp" and n1.routers == ("GR_n1",)
    assert n1.vips == {"172.18.0.10:30053": "10.244.1.5:5353",
                       "169.254.169.1:30053": "10.244.1.5:5353",
                       "[fc00:f853::10]:30053": "[fd00:10:244:1::5]:5353"}


def test_nodeport_without_nodes_only_cluster_lb() -> None:
    s = svc(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP",
                                     "nodePort": 30080}])
    assert set(lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))], {}))) == {
        "Service_default/web_TCP_cluster"}


def test_load_balancer_without_node_ports() -> None:
    # allocateLoadBalancerNodePorts=false: ingress IPs only, no per-node NodePort LBs.
    s = svc(type="LoadBalancer", allocateLoadBalancerNodePorts=False)
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"},
                                                {"hostname": "lb.example.com"}]}}
    rows = lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))], NODES))
    assert set(rows) == {"Service_default/web_TCP_cluster"}
    assert rows["Service_default/web_TCP_cluster"].vips == {
        "10.96.0.10:80": "10.244.1.5:8080", "192.0.2.10:80": "10.244.1.5:8080"}


def test_etp_local_node_without_local_endpoint_rejects() -> None:
    s = svc(type="NodePort", externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    rows = lbs(service_rows(s, [eps(("10.244.2.5", "n2", True))], NODES))
    n1 = rows["Service_default/web_TCP_node_router_n1"]
    assert n1.vips == {"172.18.0.10:30080": "", "169.254.169.1:30080": ""}
    assert n1.options["reject"] == "true"
    assert n1.options["skip_snat"] == "true"
    assert rows["Service_default/web_TCP_node_router_n2"].vips == {
        "172.18.0.11:30080": "10.244.2.5:8080",
        "169.254.169.1:30080": "10.244.2.5:8080"}
    # A pod reaching its own node's NodePort is balanced at its switch to
    # every endpoint (Cluster, as kube-proxy treats it): the router would
    # hand the node's address to the host.
    assert rows["Service_default/web_TCP_node_switch_n1"].vips == {
        "172.18.0.10:30080": "10.244.2.5:8080"}
    assert rows["Service_default/web_TCP_node_switch_n2"].vips == {
        "172.18.0.11:30080": "10.244.2.5:8080"}


def test_etp_local_external_ips_all_endpoints_for_pods() -> None:
    # Pods reaching an external IP are internal traffic: the node switch LB has
    # every endpoint; the gateway router only the node's own, without SNAT.
    s = svc(type="LoadBalancer", externalTrafficPolicy="Local", externalIPs=["192.0.2.1"],
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sl = eps(("10.244.1.5", "n1", True), ("10.244.2.5", "n2", True))
    rows = lbs(service_rows(s, [sl], NODES))
    assert rows["Service_default/web_TCP_node_router_n2"].vips == {
        "172.18.0.11:30080": "10.244.2.5:8080",
        "169.254.169.1:30080": "10.244.2.5:8080", "192.0.2.1:80": "10.244.2.5:8080"}
    sw = rows["Service_default/web_TCP_node_switch_n2"]
    assert sw.vips == {"192.0.2.1:80": "10.244.1.5:8080,10.244.2.5:8080",
                       "172.18.0.11:30080": "10.244.1.5:8080,10.244.2.5:8080"}
    assert sw.switches == ("n2",) and "skip_snat" not in sw.options
    assert "192.0.2.1:80" not in rows["Service_default/web_TCP_cluster"].vips


def test_etp_local_applies_to_cluster_ip_service_with_external_ips() -> None:
    s = svc(externalTrafficPolicy="Local", externalIPs=["192.0.2.1"])
    rows = lbs(service_rows(s, [eps(("10.244.2.5", "n2", True))], NODES))
    assert rows["Service_default/web_TCP_cluster"].vips == {"10.96.0.10:80": "10.244.2.5:8080"}
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {"192.0.2.1:80": ""}
    assert rows["Service_default/web_TCP_node_router_n2"].vips == {
        "192.0.2.1:80": "10.244.2.5:8080"}


def test_etp_local_fallback_to_terminating_decided_per_node() -> None:
    # n1 has only a terminating (still serving) endpoint; n2 a ready one. Traffic
    # entering n1 uses n1's terminating endpoint rather than being rejected.
    s = svc(type="NodePort", externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    term = eps(("10.244.1.5", "n1", False), serving=True, terminating=True)
    ready = eps(("10.244.2.5", "n2", True))
    rows = lbs(service_rows(s, [term, ready], NODES))
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {
        "172.18.0.10:30080": "10.244.1.5:8080",
        "169.254.169.1:30080": "10.244.1.5:8080"}
    assert rows["Service_default/web_TCP_node_router_n2"].vips == {
        "172.18.0.11:30080": "10.244.2.5:8080",
        "169.254.169.1:30080": "10.244.2.5:8080"}
    # Cluster-wide, ready endpoints win.
    assert rows["Service_default/web_TCP_cluster"].vips == {"10.96.0.10:80": "10.244.2.5:8080"}


def test_etp_cluster_nodeport_snats() -> None:
    s = svc(type="NodePort", externalTrafficPolicy="Cluster",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    rows = lbs(service_rows(s, [eps(("10.244.2.5", "n2", True))], NODES))
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {
        "172.18.0.10:30080": "10.244.2.5:8080",
        "169.254.169.1:30080": "10.244.2.5:8080"}
    assert "skip_snat" not in rows["Service_default/web_TCP_node_router_n1"].options


def test_itp_local_node_without_endpoint_rejects_and_nodeport_unaffected() -> None:
    s = svc(type="NodePort", internalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    rows = lbs(service_rows(s, [eps(("10.244.2.5", "n2", True))], NODES))
    assert rows["Service_default/web_TCP_node_switch_n1"].vips == {
        "10.96.0.10:80": "", "172.18.0.10:30080": "10.244.2.5:8080"}
    assert rows["Service_default/web_TCP_node_switch_n2"].vips == {
        "10.96.0.10:80": "10.244.2.5:8080", "172.18.0.11:30080": "10.244.2.5:8080"}
    # externalTrafficPolicy (Cluster) still governs the NodePort.
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {
        "172.18.0.10:30080": "10.244.2.5:8080",
        "169.254.169.1:30080": "10.244.2.5:8080"}
    assert "Service_default/web_TCP_cluster" not in rows


def test_permanent_affinity_uses_selection_fields() -> None:
    s = svc(sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86400}})
    lb = lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))], {}))[
        "Service_default/web_TCP_cluster"]
    assert "affinity_timeout" not in lb.options
    assert set(lb.selection_fields) == {"ip_src", "ip_dst"}
    assert lbs(service_rows(svc(), [], {}))[
        "Service_default/web_TCP_cluster"].selection_fields == ()


def test_affinity_on_every_per_node_lb() -> None:
    s = svc(type="NodePort", sessionAffinity="ClientIP", externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    for lb in lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))], NODES)).values():
        assert lb.options["affinity_timeout"] == "10800", lb.name


def test_dual_stack_nodeport_and_single_family_endpoints_reject_other_family() -> None:
    s = svc(type="NodePort", clusterIPs=["10.96.0.10", "fd00:10:96::a"],
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    rows = lbs(service_rows(s, [eps(("10.244.1.5", "n1", True))],
                            {"n1": ["172.18.0.10", "fc00::10"]}))
    assert rows["Service_default/web_TCP_cluster"].vips == {
        "10.96.0.10:80": "10.244.1.5:8080", "[fd00:10:96::a]:80": ""}
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {
        "172.18.0.10:30080": "10.244.1.5:8080",
        "169.254.169.1:30080": "10.244.1.5:8080", "[fc00::10]:30080": ""}


def test_ipv6_only_node_gets_no_masquerade_vip() -> None:
    s = svc(type="NodePort", clusterIPs=["fd00:10:96::a"],
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    sl = eps(("fd00:10:244:1::5", "n1", True))
    sl["addressType"] = "IPv6"
    rows = lbs(service_rows(s, [sl], {"n1": ["fc00::10"]}))
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {
        "[fc00::10]:30080": "[fd00:10:244:1::5]:8080"}


def test_translation_is_deterministic() -> None:
    # Same facts in another order -> equal rows: a resync writes nothing.
    s = svc(type="NodePort", externalTrafficPolicy="Local",
            ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                   {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}])
    a = eps(("10.244.2.5", "n2", True), ("10.244.1.5", "n1", True))
    b = eps(("10.244.1.9", "n1", True), pname="dns", port=5353, proto="UDP")
    one = service_rows(s, [a, b], NODES)
    two = service_rows(s, [b, a], dict(reversed(list(NODES.items()))))
    assert sorted(one, key=lambda r: r.key) == sorted(two, key=lambda r: r.key)
    assert len({r.key for r in one}) == len(one)


def test_owner_tags_left_to_engine() -> None:
    for lb in lbs(service_rows(svc(type="NodePort", ports=[
            {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]), [],
            NODES)).values():
        assert dict(lb.external_ids) == {"k8s.ovn.org/kind": "Service"}


def test_host_network_endpoint_is_reached_through_its_nodes_management_port() -> None:
    # The endpoint is n1's own address (a host-network pod, the apiserver):
    # n1's switch reaches it through n1's management port, other switches
    # as it is; the cluster LB stays on the gateway routers only.
    mgmt = {"n1": ["10.244.1.2"], "n2": ["10.244.2.2"]}
    sl = eps(("172.18.0.10", "n1", True), ("10.244.2.5", "n2", True))
    rows = lbs(service_rows(svc(), [sl], NODES, mgmt))
    cluster = rows["Service_default/web_TCP_cluster"]
    assert cluster.groups == ("clusterRouterLBGroup",)
    # On the routers: the host-network endpoint by its node's management port.
    assert cluster.vips == {"10.96.0.10:80": "10.244.1.2:8080,10.244.2.5:8080"}
    assert rows["Service_default/web_TCP_node_switch_n1"].vips == {
        "10.96.0.10:80": "10.244.1.2:8080,10.244.2.5:8080"}
    assert rows["Service_default/web_TCP_node_switch_n2"].vips == {
        "10.96.0.10:80": "10.244.2.5:8080,172.18.0.10:8080"}
    # Without host-network endpoints: one cluster LB on every switch and router.
    plain = lbs(service_rows(svc(), [eps(("10.244.2.5", "n2", True))], NODES, mgmt))
    assert set(plain) == {"Service_default/web_TCP_cluster"}
    assert plain["Service_default/web_TCP_cluster"].groups == ("clusterLBGroup",)


def test_host_network_nodeport_endpoints_reached_through_their_nodes_management_ports() -> None:
    # Host-network endpoints on both nodes behind a NodePort. Each gateway
    # router reaches every such endpoint through that endpoint's node's
    # management port: its own node's address is its own too, and a reply
    # from the other node's host would come back over the underlay to a port
    # br-ex gives the host. The switches keep the addresses of other nodes.
    mgmt = {"n1": ["10.244.1.2"], "n2": ["10.244.2.2"]}
    s = svc(type="NodePort", ports=[{"name": "http", "port": 80, "protocol": "TCP",
                                     "nodePort": 30080}])
    sl = eps(("172.18.0.10", "n1", True), ("172.18.0.11", "n2", True))
    rows = lbs(service_rows(s, [sl], NODES, mgmt))
    via_mgmt = "10.244.1.2:8080,10.244.2.2:8080"
    assert rows["Service_default/web_TCP_node_router_n1"].vips == {
        "172.18.0.10:30080": via_mgmt, "169.254.169.1:30080": via_mgmt}
    assert rows["Service_default/web_TCP_node_router_n2"].vips == {
        "172.18.0.11:30080": via_mgmt, "169.254.169.1:30080": via_mgmt}
    assert rows["Service_default/web_TCP_node_switch_n1"].vips == {
        "10.96.0.10:80": "10.244.1.2:8080,172.18.0.11:8080",
        "172.18.0.10:30080": "10.244.1.2:8080,172.18.0.11:8080"}
    # Without a known management port the address stays as it is.
    rows = lbs(service_rows(s, [sl], NODES, {"n1": ["10.244.1.2"]}))
    assert rows["Service_default/web_TCP_node_router_n2"].vips["172.18.0.11:30080"] == \
        "10.244.1.2:8080,172.18.0.11:8080"
    # A pod endpoint, and ETP=Local (the router keeps the client's address,
    # no SNAT to come back by), are left as they are.
    rows = lbs(service_rows(s, [eps(("10.244.2.5", "n2", True))], NODES, mgmt))
    assert rows["Service_default/web_TCP_node_router_n1"].vips["172.18.0.10:30080"] == \
        "10.244.2.5:8080"
    local = svc(type="NodePort", externalTrafficPolicy="Local", ports=[
        {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}])
    rows = lbs(service_rows(local, [sl], NODES, mgmt))
    assert rows["Service_default/web_TCP_node_router_n1"].vips["172.18.0.10:30080"] == \
        "172.18.0.10:8080"
