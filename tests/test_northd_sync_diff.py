"""The diff on plain data: rows, the planner and an in-memory database."""

from __future__ import annotations

import json

import pytest

from localcluster.ovn import OVN_NB_SCHEMA
from northd_sync import (
    ACL,
    ID_KEY,
    NAT,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    AddressSet,
    ConflictError,
    FrozenMap,
    GatewayChassis,
    InvalidRowError,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    MissingReferenceError,
    Owner,
    PortGroup,
    Row,
)
from northd_sync.cache import monitored_columns
from northd_sync.diff import OwnerPlan
from northd_sync.memory import MemoryView
from northd_sync.planner import Planner
from northd_sync.rows import ROW_TYPES

NODE = Owner("node", "n1")
POD = Owner("pod", "ns/p1")


def node_rows(subnet: str = "10.244.1.0/24") -> list[Row]:
    return [LogicalSwitch("n1", other_config={"subnet": subnet}),
            LogicalSwitchPort("k8s-n1", "n1", addresses=["0a:58:0a:f4:01:02 10.244.1.2"])]


def pod_rows(switch: str = "n1") -> list[Row]:
    a = "0a:58:0a:f4:01:05 10.244.1.5"
    return [LogicalSwitchPort("ns_p1", switch, addresses=[a], port_security=[a],
                              external_ids={"pod": "true"})]


def apply(db: MemoryView, owner: Owner, rows: list[Row]) -> OwnerPlan:
    plan = Planner(db).plan(owner, rows)
    db.execute([plan])
    return plan


def lsp_switch(db: MemoryView, lsp: str) -> list[str]:
    u = db.by_name("Logical_Switch_Port", lsp)[0]
    return sorted(db.name_of(pt, pu) or "" for pt, _, pu in db.parents("x", u))


# --- rows -------------------------------------------------------------------------

def test_rows_normalise_to_hashable_values() -> None:
    a = LogicalSwitchPort("p", "s", addresses=["m 1.2.3.4"], options={"k": "v"})
    b = LogicalSwitchPort("p", "s", addresses=("m 1.2.3.4",), options=FrozenMap({"k": "v"}))
    assert a == b and hash(a) == hash(b)
    assert a.addresses == ("m 1.2.3.4",) and a.options == {"k": "v"}
    assert {a, b} == {a}
    assert a.key == "p"
    assert LogicalSwitchPort("p", "s", key="custom").key == "custom"


def test_keys_of_rows_without_names_come_from_their_defining_columns() -> None:
    r = LogicalRouterStaticRoute("GR_n1", "10.244.0.0/16", "100.64.0.1")
    assert r.key == "GR_n1|dst-ip|10.244.0.0/16|100.64.0.1|"
    n = NAT("GR_n1", "snat", "172.18.0.2", "10.244.0.0/16")
    assert n.key == "GR_n1|snat|172.18.0.2|10.244.0.0/16"
    acl = ACL("to-lport", 1001, "ip4.src == 10.0.0.1", "allow-related", port_group="pg")
    assert acl.key == "pg:pg|to-lport|1001|ip4.src == 10.0.0.1"
    pol = LogicalRouterPolicy("r", 1004, "ip4.dst == 1.2.3.4", "reroute", nexthops=["10.0.0.2"])
    assert pol.key == "r|1004|ip4.dst == 1.2.3.4" and pol.nexthops == ("10.0.0.2",)


def test_row_validation() -> None:
    with pytest.raises(ValueError, match="exactly one of port_group and switch"):
        ACL("to-lport", 1, "ip4", "drop")
    with pytest.raises(ValueError, match="ownership keys"):
        LogicalSwitch("s", external_ids={OWNER_KEY: "me"})
    with pytest.raises(ValueError, match="networks must not be empty"):
        LogicalRouterPort("rtos-n1", "r", "0a:58:0a:f4:01:01", [])
    with pytest.raises(ValueError, match="at least one band"):
        Meter("m", "pktps", [])
    with pytest.raises(ValueError, match="action 'forward' is not allow, drop or reroute"):
        LogicalRouterPolicy("r", 1004, "ip4", "forward")
    with pytest.raises(ValueError, match="nexthops go with action reroute"):
        LogicalRouterPolicy("r", 1004, "ip4", "reroute")
    with pytest.raises(ValueError, match="nexthops go with action reroute"):
        LogicalRouterPolicy("r", 1004, "ip4", "allow", nexthops=("10.0.0.2",))


# --- planning ---------------------------------------------------------------------

def test_apply_to_empty_db_inserts_everything_and_tags_ownership() -> None:
    db = MemoryView()
    plan = apply(db, NODE, node_rows())
    assert (len(plan.inserts), len(plan.updates), len(plan.deletes)) == (2, 0, 0)
    sw = db.find("Logical_Switch", "n1")
    assert sw is not None
    assert sw["external_ids"] == {OWNER_TYPE_KEY: "node", OWNER_KEY: "n1", ID_KEY: "n1"}
    assert lsp_switch(db, "k8s-n1") == ["n1"]


def test_second_plan_of_the_same_rows_is_empty() -> None:
    db = MemoryView()
    apply(db, NODE, node_rows())
    apply(db, POD, pod_rows())
    assert Planner(db).plan(NODE, node_rows()).empty
    assert Planner(db).plan(POD, pod_rows()).empty


def test_changed_column_is_the_only_change() -> None:
    db = MemoryView()
    apply(db, NODE, node_rows())
    plan = Planner(db).plan(NODE, node_rows("10.244.9.0/24"))
    assert not plan.inserts and not plan.deletes
    [u] = plan.updates
    assert u.row.TABLE == "Logical_Switch"
    assert u.changes == {"other_config": ({"subnet": "10.244.1.0/24"},
                                          {"subnet": "10.244.9.0/24"})}


def test_rows_no_longer_desired_are_deleted() -> None:
    db = MemoryView()
    apply(db, NODE, node_rows())
    plan = apply(db, NODE, node_rows()[:1])
    assert [(d.table, d.key) for d in plan.deletes] == [("Logical_Switch_Port", "k8s-n1")]
    assert db.count("Logical_Switch_Port") == 0
    apply(db, NODE, [])
    assert db.count("Logical_Switch") == 0


def test_parent_reapply_keeps_children_of_other_owners() -> None:
    db = MemoryView()
    apply(db, NODE, node_rows())
    apply(db, POD, pod_rows())
    hand_sw = db.by_name("Logical_Switch", "n1")[0]
    db.add("Logical_Switch_Port", {"name": "hand-lsp"},
           parent=("Logical_Switch", "ports", hand_sw))
    plan = apply(db, NODE, node_rows("10.244.7.0/24"))
    assert [u.row.TABLE for u in plan.updates] == ["Logical_Switch"]
    assert lsp_switch(db, "ns_p1") == ["n1"]
    assert lsp_switch(db, "hand-lsp") == ["n1"]


def test_child_can_attach_to_a_hand_made_parent() -> None:
    db = MemoryView()
    db.add("Logical_Switch", {"name": "n1"})   # no ownership: referenced, never modified
    apply(db, POD, pod_rows())
    assert lsp_switch(db, "ns_p1") == ["n1"]
    apply(db, POD, [])
    assert db.count("Logical_Switch") == 1 and db.count("Logical_Switch_Port") == 0


def test_moving_a_port_to_another_switch_relinks_it() -> None:
    db = MemoryView()
    apply(db, NODE, node_rows())
    apply(db, Owner("node", "n2"), [LogicalSwitch("n2")])
    apply(db, POD, pod_rows("n1"))
    plan = apply(db, POD, pod_rows("n2"))
    [u] = plan.updates
    assert u.changes == {"switch": (("n1",), ("n2",))}
    assert lsp_switch(db, "ns_p1") == ["n2"]


def test_missing_parent_raises_and_leaves_the_planner_untouched() -> None:
    db = MemoryView()
    planner = Planner(db)
    with pytest.raises(MissingReferenceError) as e:
        planner.plan(POD, [AddressSet("as1", ["1.1.1.1"]), *pod_rows("nosuch")])
    msg = str(e.value)
    assert "Logical_Switch_Port row 'ns_p1'" in msg and "Logical_Switch 'nosuch'" in msg
    assert "pod/ns/p1" in msg
    assert not planner.pending and not planner.deleted
    # the batch can go on: a switch planned later in the same batch is seen
    planner.plan(NODE, node_rows())
    planner.plan(POD, pod_rows())


def test_name_held_by_a_hand_made_row_is_a_conflict() -> None:
    db = MemoryView()
    db.add("Logical_Switch", {"name": "n1"})
    with pytest.raises(ConflictError, match="not managed by northd_sync"):
        Planner(db).plan(NODE, node_rows())
    apply(db, Owner("node", "other"), [LogicalSwitch("x")])
    with pytest.raises(ConflictError, match="belongs to node/other"):
        Planner(db).plan(NODE, [LogicalSwitch("x")])


def test_invalid_value_names_the_column() -> None:
    db = MemoryView()
    bad = LogicalSwitch("n1", other_config={"k": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidRowError, match="column 'other_config'"):
        Planner(db).plan(NODE, [bad])


def test_same_key_twice_with_different_content_is_refused() -> None:
    with pytest.raises(InvalidRowError, match="same key"):
        Planner(MemoryView()).plan(NODE, [LogicalSwitch("a", key="k"),
                                          LogicalSwitch("b", key="k")])


def test_duplicate_owned_rows_are_repaired_to_one() -> None:
    db = MemoryView()
    apply(db, NODE, node_rows()[:1])
    ext = {OWNER_TYPE_KEY: "node", OWNER_KEY: "n1", ID_KEY: "n1"}
    db.add("Logical_Switch", {"name": "n1", "external_ids": ext,
                              "other_config": {"subnet": "10.244.1.0/24"}})
    assert db.count("Logical_Switch") == 2
    plan = apply(db, NODE, node_rows()[:1])
    assert len(plan.deletes) == 1
    assert db.count("Logical_Switch") == 1
    assert Planner(db).plan(NODE, node_rows()[:1]).empty


def test_stale_owners_are_visible_by_type() -> None:
    db = MemoryView()
    for i in range(3):
        apply(db, Owner("pod", f"ns/p{i}"), [AddressSet(f"as{i}")])
    assert db.owners("pod") == {"ns/p0", "ns/p1", "ns/p2"}
    apply(db, Owner("pod", "ns/p1"), [])
    assert db.owners("pod") == {"ns/p0", "ns/p2"}


def test_full_topology_round_trip() -> None:
    db = MemoryView()
    rows: list[Row] = [
        LoadBalancerGroup("clusterLBGroup"),
        LogicalRouter("ovn_cluster_router", load_balancer_groups=["clusterLBGroup"]),
        LogicalRouterPort("rtos-n1", "ovn_cluster_router", "0a:58:0a:f4:01:01",
                          ["10.244.1.1/24"]),
        GatewayChassis("rtos-n1-ch1", "rtos-n1", "ch1", 1),
        LogicalRouterStaticRoute("ovn_cluster_router", "10.244.1.0/24", "100.64.0.2"),
        LogicalRouterPolicy("ovn_cluster_router", 1004, "ip4.dst == 172.18.0.2", "reroute",
                            nexthops=["10.244.1.2"]),
        NAT("ovn_cluster_router", "snat", "172.18.0.2", "10.244.0.0/16"),
        LogicalSwitch("n1", load_balancer_groups=["clusterLBGroup"]),
        LogicalSwitchPort("stor-n1", "n1", type="router", addresses=["router"],
                          options={"router-port": "rtos-n1"}),
        LoadBalancer("Service_ns/web_TCP_cluster", {"10.96.0.10:80": "10.244.1.5:8080"},
                     protocol="tcp", groups=["clusterLBGroup"]),
        PortGroup("pg_ns", ports=["stor-n1"]),
        ACL("to-lport", 1000, "outport == @pg_ns", "drop", port_group="pg_ns"),
        ACL("from-lport", 1001, "arp", "allow", switch="n1"),
        AddressSet("as_ns", ["10.244.1.5"]),
        Meter("acl-logging", "pktps", [MeterBand(rate=20)]),
    ]
    plan = apply(db, Owner("cluster", "default"), rows)
    assert len(plan.inserts) == len(rows)
    assert plan.register == [("Load_Balancer_Group", "clusterLBGroup")]
    assert Planner(db).plan(Owner("cluster", "default"), rows).empty
    pg = db.find("Port_Group", "pg_ns")
    assert pg is not None and pg["ports"] == frozenset(db.by_name("Logical_Switch_Port",
                                                                  "stor-n1"))
    plan = apply(db, Owner("cluster", "default"), [])
    assert plan.unregister == [("Load_Balancer_Group", "clusterLBGroup")]
    assert all(not rows for rows in db.rows.values())


def test_only_the_needed_tables_and_columns_are_monitored() -> None:
    schema = json.loads(OVN_NB_SCHEMA.read_text())
    cols = monitored_columns(schema["tables"])
    assert set(cols) == {t.TABLE for t in ROW_TYPES} | {"Meter_Band", "NB_Global"}
    assert cols["NB_Global"] == ["external_ids"]
    lsp = set(cols["Logical_Switch_Port"])
    assert {"name", "addresses", "port_security", "options", "external_ids"} <= lsp
    assert not lsp & {"up", "dynamic_addresses", "tag", "ha_chassis_group"}  # northd's
    assert set(cols["Logical_Switch"]) == {"name", "other_config", "load_balancer_group",
                                           "external_ids", "ports", "acls", "load_balancer"}
