"""northd_sync against a real NB ovsdb-server (the ovn_central fixture)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from localcluster.ovn import OvnCentral
from localcluster.procs import free_port
from northd_sync import (
    ACL,
    ID_KEY,
    NAT,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    AddressSet,
    ApplyResult,
    ConflictError,
    GatewayChassis,
    InvalidRowError,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    MissingReferenceError,
    NBConnectionError,
    NorthdSync,
    NotStartedError,
    Owner,
    PortGroup,
    Row,
    SyncReport,
    TransactionError,
)
from tests.northd_helpers import as_list, names, nb_list
from tests.waiting import eventually

NODE = Owner("node", "n1")


def mac_ip(i: int) -> str:
    return f"0a:58:0a:f4:01:{i:02x} 10.244.1.{i}"


def node_rows(subnet: str = "10.244.1.0/24") -> list[Row]:
    return [LogicalSwitch("n1", other_config={"subnet": subnet}),
            LogicalSwitchPort("k8s-n1", "n1", addresses=[mac_ip(2)])]


def pod(i: int, switch: str = "n1") -> tuple[Owner, list[Row]]:
    a = mac_ip(i)
    return (Owner("pod", f"ns/p{i}"),
            [LogicalSwitchPort(f"ns_p{i}", switch, addresses=[a], port_security=[a],
                               external_ids={"pod": "true"})])


def ports_of(db: str, switch: str) -> list[str]:
    [sw] = [r for r in nb_list(db, "Logical_Switch", "name", "ports") if r["name"] == switch]
    uuids = set(as_list(sw["ports"]))
    return sorted(r["name"] for r in nb_list(db, "Logical_Switch_Port", "name")
                  if r["_uuid"] in uuids)


@pytest.fixture
def nb(ovn_central: OvnCentral) -> Iterator[NorthdSync]:
    engine = NorthdSync(ovn_central.nb_unix, timeout=30).start()
    try:
        yield engine
    finally:
        engine.stop()


def txns(nb: NorthdSync) -> int:
    return nb.counters()["transactions"]


def test_second_apply_writes_nothing(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    db = ovn_central.nb_unix
    r1 = nb.apply(NODE, node_rows())
    assert (r1.inserted, r1.updated, r1.deleted) == (2, 0, 0)
    t = txns(nb)
    r2 = nb.apply(NODE, node_rows())
    assert not r2.changed
    assert txns(nb) == t, "a no-op apply must not send a transaction"
    [sw] = nb_list(db, "Logical_Switch", "name", "other_config", "external_ids")
    assert sw["other_config"] == {"subnet": "10.244.1.0/24"}
    assert sw["external_ids"] == {OWNER_TYPE_KEY: "node", OWNER_KEY: "n1", ID_KEY: "n1"}
    assert ports_of(db, "n1") == ["k8s-n1"]
    # a change writes exactly that change, in one transaction
    r3 = nb.apply(NODE, node_rows("10.244.9.0/24"))
    assert (r3.inserted, r3.updated, r3.deleted) == (0, 1, 0)
    assert txns(nb) == t + 1
    assert nb_list(db, "Logical_Switch", "other_config")[0]["other_config"] == {
        "subnet": "10.244.9.0/24"}


def test_every_table_round_trip(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    db = ovn_central.nbctl
    owner = Owner("cluster", "default")
    rows: list[Row] = [
        LoadBalancerGroup("clusterLBGroup"),
        LogicalRouter("ovn_cluster_router", options={"mcast_relay": "false"},
                      load_balancer_groups=["clusterLBGroup"]),
        LogicalRouterPort("rtos-n1", "ovn_cluster_router", "0a:58:0a:f4:01:01",
                          ["10.244.1.1/24"]),
        GatewayChassis("rtos-n1-ch1", "rtos-n1", "ch1", 1),
        LogicalRouterStaticRoute("ovn_cluster_router", "10.244.1.0/24", "100.64.0.2",
                                 policy="src-ip"),
        NAT("ovn_cluster_router", "snat", "172.18.0.2", "10.244.0.0/16"),
        LogicalSwitch("n1", other_config={"subnet": "10.244.1.0/24"},
                      load_balancer_groups=["clusterLBGroup"]),
        LogicalSwitchPort("stor-n1", "n1", type="router", addresses=["router"],
                          options={"router-port": "rtos-n1"}),
        LoadBalancer("Service_ns/web_TCP_cluster", {"10.96.0.10:80": "10.244.1.5:8080"},
                     protocol="tcp", options={"reject": "true"}, groups=["clusterLBGroup"],
                     routers=["ovn_cluster_router"]),
        PortGroup("pg_ns", ports=["stor-n1"]),
        ACL("to-lport", 1000, "outport == @pg_ns", "drop", port_group="pg_ns",
            log=True, severity="info", meter="acl-logging", name="deny"),
        ACL("from-lport", 1001, "arp", "allow", switch="n1"),
        AddressSet("as_ns", ["10.244.1.5", "10.244.1.6"]),
        Meter("acl-logging", "pktps", [MeterBand(rate=20)], fair=True),
    ]
    r = nb.apply(owner, rows)
    assert r.inserted == len(rows)
    shown = db("show")
    assert "rtos-n1" in shown and "stor-n1" in shown and "172.18.0.2" in shown
    assert "clusterLBGroup" in db("--bare", "--columns=name", "list", "Load_Balancer_Group")
    assert db("--bare", "--columns=bands", "list", "Meter").strip()
    assert "10.244.1.0/24" in db("lr-route-list", "ovn_cluster_router")
    assert "outport == @pg_ns" in db("acl-list", "pg_ns")
    assert "arp" in db("acl-list", "n1")
    assert db("lrp-get-gateway-chassis", "rtos-n1").split() == ["rtos-n1-ch1", "1"]
    assert db("--bare", "--columns=load_balancer", "find", "Logical_Router",
              "name=ovn_cluster_router").strip()
    t = txns(nb)
    assert not nb.apply(owner, rows).changed and txns(nb) == t
    # change a few things: one transaction, only those rows
    rows2 = [*rows]
    rows2[8] = LoadBalancer("Service_ns/web_TCP_cluster",
                            {"10.96.0.10:80": "10.244.1.5:8080,10.244.1.6:8080"},
                            protocol="tcp", options={"reject": "true"},
                            groups=["clusterLBGroup"])          # detached from the router
    rows2[12] = AddressSet("as_ns", ["10.244.1.5"])
    rows2[13] = Meter("acl-logging", "pktps", [MeterBand(rate=50, burst_size=10)], fair=True)
    r = nb.apply(owner, rows2)
    assert (r.inserted, r.updated, r.deleted) == (0, 3, 0)
    assert txns(nb) == t + 1
    assert not db("--bare", "--columns=load_balancer", "find", "Logical_Router",
                  "name=ovn_cluster_router").strip()
    assert "50" in db("--bare", "--columns=rate", "list", "Meter_Band").split()
    assert not nb.apply(owner, rows2).changed
    # delete: all gone, including the ownership record of the group
    r = nb.delete(owner)
    assert r.deleted == len(rows)
    for table in ("Logical_Switch", "Logical_Switch_Port", "Logical_Router", "ACL", "NAT",
                  "Load_Balancer", "Load_Balancer_Group", "Port_Group", "Address_Set",
                  "Meter", "Gateway_Chassis", "Logical_Router_Static_Route"):
        assert not nb_list(ovn_central.nb_unix, table), table
    assert "k8s.ovn.org/owned" not in db("get", "NB_Global", ".", "external_ids")


def test_hand_made_rows_survive_everything(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    db = ovn_central.nb_unix
    ovn_central.nbctl("ls-add", "hand-sw", "--", "lsp-add", "hand-sw", "hand-sw-p")
    ovn_central.nbctl("lb-add", "hand-lb", "10.96.9.9:80", "10.0.0.1:80")
    # half-tagged: not ours either
    ovn_central.nbctl("create", "Address_Set", "name=half",
                      "external_ids:k8s.ovn.org/owner-type=pod")
    nb.apply(NODE, node_rows())
    ovn_central.nbctl("lsp-add", "n1", "hand-on-ours")
    # a pod may attach to the hand-made switch
    owner, rows = pod(5, switch="hand-sw")
    nb.apply(owner, rows)
    before = {t: nb_list(db, t) for t in ("Load_Balancer", "Address_Set")}

    nb.apply(NODE, node_rows("10.244.2.0/24"))
    nb.sync("node", {"n1": node_rows("10.244.3.0/24")})
    nb.sync("pod", {})
    nb.sync("other-type", {})
    assert ports_of(db, "n1") == ["hand-on-ours", "k8s-n1"]
    nb.delete(NODE)
    assert names(db, "Logical_Switch") == ["hand-sw"]
    assert ports_of(db, "hand-sw") == ["hand-sw-p"]          # the pod's port was swept
    assert names(db, "Logical_Switch_Port") == ["hand-sw-p"]  # ours were deleted with n1
    assert {t: nb_list(db, t) for t in before} == before


def test_name_of_a_hand_made_row_is_a_conflict(ovn_central: OvnCentral,
                                               nb: NorthdSync) -> None:
    ovn_central.nbctl("ls-add", "n1")
    t = txns(nb)
    with pytest.raises(ConflictError, match="not managed by northd_sync"):
        nb.apply(NODE, node_rows())
    assert txns(nb) == t
    assert names(ovn_central.nb_unix, "Logical_Switch_Port") == []


def test_stale_owners_are_swept_in_one_sync(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    db = ovn_central.nb_unix
    nb.apply(NODE, node_rows())
    for i in range(5, 10):
        nb.apply(*pod(i))
    t = txns(nb)
    desired = {o.name: r for o, r in (pod(5), pod(6))}
    report = nb.sync("pod", desired)
    assert txns(nb) == t + 1
    assert report.stale_owners == ["ns/p7", "ns/p8", "ns/p9"]
    assert report.extra == 3 and report.missing == 0 and not report.errors
    assert ports_of(db, "n1") == ["k8s-n1", "ns_p5", "ns_p6"]
    assert nb.sync("pod", desired).clean
    assert txns(nb) == t + 1


def test_sync_report_then_repair(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    db = ovn_central.nb_unix
    nb.apply(NODE, node_rows())
    for i in (5, 6, 7):
        nb.apply(*pod(i))
    # damage: a changed column, a deleted owned row, a leftover owned row
    ovn_central.nbctl("lsp-set-addresses", "ns_p5", "0a:58:0a:f4:01:63 10.244.1.99")
    ovn_central.nbctl("lsp-del", "ns_p6")
    ovn_central.nbctl("create", "Address_Set", "name=leftover",
                      f"external_ids:{OWNER_TYPE_KEY}=pod", f'external_ids:"{OWNER_KEY}"="ns/p7"',
                      f"external_ids:{ID_KEY}=leftover")
    desired = {o.name: r for o, r in (pod(5), pod(6), pod(7))}
    t = txns(nb)

    def damage_seen() -> SyncReport | None:
        # ovn-nbctl's commits reach the engine's IDL cache a moment later.
        r = nb.sync("pod", desired, repair=False)
        return r if (r.missing, r.extra, r.changed) == (1, 1, 1) else None
    report = eventually(damage_seen, 10, "the engine sees the three damages")
    assert txns(nb) == t
    assert report.diffs["ns/p6"].missing == [("Logical_Switch_Port", "ns_p6")]
    assert report.diffs["ns/p7"].extra == [("Address_Set", "leftover")]
    [ch] = report.diffs["ns/p5"].changed
    assert ch.key == "ns_p5" and set(ch.columns) == {"addresses"}
    assert "missing" in str(report)
    report = nb.sync("pod", desired)
    assert report.repair and report.changed == 1
    assert txns(nb) == t + 1
    assert ports_of(db, "n1") == ["k8s-n1", "ns_p5", "ns_p6", "ns_p7"]
    assert names(db, "Address_Set") == []
    assert nb.sync("pod", desired).clean and txns(nb) == t + 1


def test_pod_port_survives_node_reapply(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    db = ovn_central.nb_unix
    nb.apply(NODE, node_rows())
    nb.apply(*pod(5))
    nb.apply(NODE, node_rows("10.244.4.0/24"))
    nb.apply(NODE, node_rows("10.244.4.0/24"))
    nb.sync("node", {"n1": node_rows("10.244.4.0/24")})
    assert ports_of(db, "n1") == ["k8s-n1", "ns_p5"]
    # the pod moves to another node's switch
    nb.apply(Owner("node", "n2"), [LogicalSwitch("n2")])
    r = nb.apply(*pod(5, switch="n2"))
    assert r.updated == 1
    assert ports_of(db, "n1") == ["k8s-n1"] and ports_of(db, "n2") == ["ns_p5"]
    # the node goes: its switch takes the pod's port with it (OVN strong refs)
    nb.delete(Owner("node", "n2"))
    assert names(db, "Logical_Switch_Port") == ["k8s-n1"]
    with pytest.raises(MissingReferenceError, match="Logical_Switch 'n2'"):
        nb.apply(*pod(5, switch="n2"))


def test_bad_rows_are_clear_errors_and_write_nothing(ovn_central: OvnCentral,
                                                     nb: NorthdSync) -> None:
    db = ovn_central.nb_unix
    nb.apply(NODE, node_rows())
    t = txns(nb)
    with pytest.raises(MissingReferenceError) as e:
        nb.apply(Owner("pod", "ns/x"), [AddressSet("as-x", ["1.2.3.4"]),
                                        LogicalSwitchPort("ns_x", "nosuch")])
    assert "Logical_Switch_Port row 'ns_x'" in str(e.value)
    assert "Logical_Switch 'nosuch'" in str(e.value)
    with pytest.raises(InvalidRowError) as ie:
        nb.apply(Owner("pol", "p"), [PortGroup("pg1"),
                                     ACL("to-lport", 1000, "ip4", "bogus", port_group="pg1")])
    assert "ACL" in str(ie.value) and "'action'" in str(ie.value) and "bogus" in str(ie.value)
    with pytest.raises(InvalidRowError, match="'priority'"):
        nb.apply(Owner("pol", "p"), [PortGroup("pg1"),
                                     ACL("to-lport", 99999, "ip4", "drop", port_group="pg1")])
    assert txns(nb) == t
    assert names(db, "Address_Set") == [] and names(db, "Port_Group") == []
    # a batch with one bad owner: the others still commit
    futs = [nb.apply(*pod(i), wait=False) for i in (10, 11)]
    bad = nb.apply(Owner("pod", "ns/bad"), [LogicalSwitchPort("ns_bad", "nosuch")], wait=False)
    futs += [nb.apply(*pod(i), wait=False) for i in (12, 13)]
    assert all(f.result().inserted == 1 for f in futs)
    assert isinstance(bad.exception(), MissingReferenceError)
    assert ports_of(db, "n1") == ["k8s-n1", "ns_p10", "ns_p11", "ns_p12", "ns_p13"]


def test_server_rejection_names_the_owner_and_rows(ovn_central: OvnCentral,
                                                   nb: NorthdSync) -> None:
    # A hand-made switch uses our group: deleting the group violates a strong
    # reference, which only the server can tell.
    owner = Owner("cluster", "lbg")
    nb.apply(owner, [LoadBalancerGroup("grp")])
    grp = ovn_central.nbctl("--bare", "--columns=_uuid", "list", "Load_Balancer_Group").strip()
    ovn_central.nbctl("ls-add", "hand", "--", "add", "Logical_Switch", "hand",
                      "load_balancer_group", grp)
    futs = [nb.apply(Owner("as", f"a{i}"), [AddressSet(f"as{i}")], wait=False)
            for i in range(3)]
    bad: Future[ApplyResult] = nb.delete(owner, wait=False)
    assert all(f.result().inserted == 1 for f in futs)
    err = bad.exception()
    assert isinstance(err, TransactionError), err
    assert "cluster/lbg" in str(err) and "Load_Balancer_Group 'grp'" in str(err)
    assert "referential integrity" in str(err)
    assert names(ovn_central.nb_unix, "Load_Balancer_Group") == ["grp"]


def test_batching_many_applies_few_transactions(ovn_central: OvnCentral,
                                                nb: NorthdSync) -> None:
    nb.apply(NODE, node_rows())
    t = txns(nb)
    futs = [nb.apply(*pod(i), wait=False) for i in range(10, 210)]
    results = [f.result() for f in futs]
    assert all(r.inserted == 1 for r in results)
    sent = txns(nb) - t
    assert 1 <= sent <= 20, f"{sent} transactions for 200 applies"
    lsps = names(ovn_central.nb_unix, "Logical_Switch_Port")
    assert len(lsps) == 201 and len(set(lsps)) == 201
    # later applies of the same owner supersede earlier queued ones
    o, _ = pod(10)
    f1 = nb.apply(o, [AddressSet("first")], wait=False)
    f2 = nb.apply(o, [AddressSet("second")], wait=False)
    assert f2.result() is not None and f1.result() is not None
    assert names(ovn_central.nb_unix, "Address_Set") == ["second"]


def test_counters_and_prometheus_metrics(ovn_central: OvnCentral, nb: NorthdSync) -> None:
    nb.apply(NODE, node_rows())
    nb.apply(NODE, node_rows())
    c = nb.counters()
    assert c["transactions"] == c["transactions_success"] == 1
    assert c["rows_written"] == 2 and c["applies"] == 2 and c["applies_unchanged"] == 1
    text = nb.metrics_text()
    assert 'northd_sync_transactions_total{result="success"} 1.0' in text
    assert 'northd_sync_rows_written_total{op="insert",table="Logical_Switch"} 1.0' in text
    assert "northd_sync_commit_latency_seconds_count 1.0" in text
    assert "northd_sync_reconnects_total 0.0" in text
    # a second engine in the same process has its own registry, and TCP works
    assert ovn_central.nb_tcp
    with NorthdSync(ovn_central.nb_tcp, timeout=30) as other:
        assert not other.apply(NODE, node_rows()).changed
        assert other.counters()["transactions"] == 0
    assert nb.counters()["transactions"] == 1


def test_python_ovs_parser_path_still_works(ovn_central: OvnCentral) -> None:
    with NorthdSync(ovn_central.nb_unix, timeout=30, fast_json=False) as slow:
        assert slow.apply(NODE, node_rows()).inserted == 2
        assert not slow.apply(NODE, node_rows()).changed


def test_unreachable_nb_is_a_clear_error(workdir: Path) -> None:
    sock = workdir / "nothing.sock"
    with pytest.raises(NBConnectionError) as e:
        NorthdSync(f"unix:{sock}", timeout=2).start()
    assert f"unix:{sock}" in str(e.value) and "No such file" in str(e.value)
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(NBConnectionError, match=f"tcp:127.0.0.1:{port}.*[Cc]onnection refused"):
        NorthdSync(f"tcp:127.0.0.1:{port}", timeout=2).start()
    assert time.monotonic() - t0 < 60     # an error, not a hang
    with pytest.raises(ValueError, match="bad NB remote"):
        NorthdSync("/run/ovn/ovnnb_db.sock")
    with pytest.raises(ValueError, match="needs ssl_key"):
        NorthdSync("ssl:127.0.0.1:6641")


def test_apply_needs_a_running_engine(ovn_central: OvnCentral) -> None:
    engine = NorthdSync(ovn_central.nb_unix, timeout=30)
    with pytest.raises(NotStartedError):
        engine.apply(NODE, node_rows())
    engine.start()
    engine.stop()
    with pytest.raises(NotStartedError):
        engine.apply(NODE, node_rows())
