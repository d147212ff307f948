"""Stale UDP conntrack entries: what is parsed, which VIPs, which endpoints."""

from __future__ import annotations

from node.conntrack import Entry, parse_dump, udp_vips, used_endpoints

DUMP = """\
udp,orig=(src=10.244.1.2,dst=10.96.0.10,sport=57470,dport=53),reply=(src=10.244.1.3,dst=10.244.1.2,sport=53,dport=57470),zone=16,mark=2
udp,orig=(src=10.244.1.2,dst=10.244.1.3,sport=54153,dport=53),reply=(src=10.244.1.3,dst=10.244.1.2,sport=53,dport=54153),zone=19
tcp,orig=(src=10.244.1.2,dst=10.96.0.10,sport=41859,dport=53),reply=(src=10.244.1.3,dst=10.244.1.2,sport=53,dport=41859),zone=16,mark=2,protoinfo=(state=TIME_WAIT)
udp,orig=(src=172.18.0.1,dst=172.18.0.10,sport=9,dport=30053),reply=(src=10.244.1.3,dst=100.64.0.2,sport=53,dport=9)
"""


def test_parse_dump_takes_udp_entries_with_their_zone() -> None:
    got = parse_dump(DUMP)
    assert got == [Entry(16, "10.244.1.2", "10.96.0.10", 57470, 53),
                   Entry(19, "10.244.1.2", "10.244.1.3", 54153, 53),
                   Entry(0, "172.18.0.1", "172.18.0.10", 9, 30053)]
    assert got[0].tuple_arg() == ("ct_nw_src=10.244.1.2,ct_nw_dst=10.96.0.10,ct_nw_proto=17,"
                                  "ct_tp_src=57470,ct_tp_dst=53")


def test_udp_vips_cover_cluster_external_and_node_ports() -> None:
    svc = {"spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                    "externalIPs": ["192.0.2.5"],
                    "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053},
                              {"port": 53, "protocol": "TCP", "nodePort": 30054}]}}
    assert udp_vips(svc, ["172.18.0.10"]) == {
        ("10.96.0.10", 53), ("192.0.2.5", 53), ("172.18.0.10", 30053)}
    assert udp_vips({"spec": {"clusterIP": "None", "ports": [
        {"port": 53, "protocol": "UDP"}]}}, []) == set()


def test_used_endpoints_are_ready_or_serving() -> None:
    sl = {"endpoints": [
        {"addresses": ["10.0.0.1"], "conditions": {"ready": True}},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False, "serving": True}},
        {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "serving": False}}]}
    assert used_endpoints(sl) == {"10.0.0.1", "10.0.0.2"}
    assert used_endpoints(None) == set()
