"""northd_sync under faults: NB restarts, a raft leader dying, SSL, and the
JSON-RPC framing it uses instead of python-ovs' parser."""

from __future__ import annotations

import errno
import socket
import time
from concurrent.futures import Future
from pathlib import Path

import ovs.json
import ovs.jsonrpc
import ovs.stream
import pytest

from localcluster.ovn import OVN_NB_SCHEMA, OvnCentral
from localcluster.procs import DaemonSet, free_port, run, tcp_open
from northd_sync import (
    ApplyResult,
    CommitTimeoutError,
    LogicalSwitch,
    LogicalSwitchPort,
    NorthdSync,
    NorthdSyncError,
    Owner,
)
from northd_sync.fastjson import FastConnection
from tests.northd_helpers import RaftNB, as_list, kill_hard, make_certs, nb_list, ovsdb_server


def mac_ip(i: int) -> str:
    return f"0a:58:0a:f4:{1 + i // 250:02x}:{2 + i % 250:02x} 10.244.{1 + i // 250}.{2 + i % 250}"


def check_exactly_once(db: str, switches: dict[str, set[str]]) -> None:
    """Every switch exists once and has exactly the given ports, each once."""
    sws = nb_list(db, "Logical_Switch", "name", "ports")
    lsps = {r["_uuid"]: r["name"] for r in nb_list(db, "Logical_Switch_Port", "name")}
    names = [s["name"] for s in sws]
    assert sorted(names) == sorted(switches), "missing or duplicated switches"
    assert len(lsps) == len(set(lsps.values())) == sum(len(p) for p in switches.values())
    for s in sws:
        assert sorted(lsps[u] for u in as_list(s["ports"])) == sorted(switches[s["name"]])


def test_nb_restart_mid_stream(ovn_central: OvnCentral) -> None:
    nb = NorthdSync(ovn_central.nb_unix, timeout=90).start()
    try:
        nb.apply(Owner("node", "n1"), [LogicalSwitch("n1")])
        futs: list[Future[ApplyResult]] = []
        n = 150
        for i in range(n):
            futs.append(nb.apply(Owner("pod", f"ns/p{i}"),
                                 [LogicalSwitchPort(f"ns_p{i}", "n1", addresses=[mac_ip(i)])],
                                 wait=False))
            if i == 50:
                kill_hard(ovn_central.daemon("ovnnb_db"))      # no clean shutdown
            if i == 100:
                ovn_central.start_db("nb")                     # same DB file
            time.sleep(0.01)
        results = [f.result() for f in futs]
        # an apply that committed just before the kill may report no change
        # after its retry found the rows: what counts is the DB
        assert sum(r.inserted for r in results) <= n
        check_exactly_once(ovn_central.nb_unix, {"n1": {f"ns_p{i}" for i in range(n)}})
        assert nb.counters()["reconnects"] >= 1
        assert nb.connected
        assert not nb.apply(Owner("pod", "ns/p0"),
                            [LogicalSwitchPort("ns_p0", "n1", addresses=[mac_ip(0)])]).changed
    finally:
        nb.stop()


def test_nb_down_for_longer_than_the_timeout(ovn_central: OvnCentral) -> None:
    nb = NorthdSync(ovn_central.nb_unix, timeout=3).start()
    try:
        kill_hard(ovn_central.daemon("ovnnb_db"))
        with pytest.raises(CommitTimeoutError) as e:
            nb.apply(Owner("node", "n1"), [LogicalSwitch("n1")])
        assert ovn_central.nb_unix in str(e.value) and "outcome is unknown" in str(e.value)
        queued = nb.apply(Owner("node", "n2"), [LogicalSwitch("n2")], wait=False)
    finally:
        nb.stop()
    # stopping fails what is still queued instead of leaving callers hanging
    assert isinstance(queued.exception(timeout=30), NorthdSyncError)


def test_raft_leader_killed_while_applying(workdir: Path) -> None:
    cluster = RaftNB(workdir / "raft").start()
    try:
        nb = NorthdSync(cluster.remote, timeout=120).start()
        try:
            leader = cluster.leader()
            futs = []
            n = 120
            for i in range(n):
                futs.append(nb.apply(Owner("node", f"n{i}"),
                                     [LogicalSwitch(f"n{i}"),
                                      LogicalSwitchPort(f"k8s-n{i}", f"n{i}")], wait=False))
                if i == 40:
                    kill_hard(cluster.members[leader])
                time.sleep(0.01)
            for f in futs:
                f.result()
            assert cluster.leader() != leader
            check_exactly_once(cluster.remote, {f"n{i}": {f"k8s-n{i}"} for i in range(n)})
            assert nb.counters()["reconnects"] >= 1
            assert not nb.apply(Owner("node", "n0"), [LogicalSwitch("n0"),
                                                      LogicalSwitchPort("k8s-n0", "n0")]).changed
        finally:
            nb.stop()
    finally:
        cluster.stop()


def test_ssl_remote(workdir: Path) -> None:
    certs = make_certs(workdir / "pki")
    db = workdir / "nb.db"
    run(["ovsdb-tool", "create", str(db), str(OVN_NB_SCHEMA)])
    port = free_port()
    daemons = DaemonSet()
    try:
        d = daemons.start(ovsdb_server(
            "nbssl", db, workdir, f"pssl:{port}:127.0.0.1",
            extra=(f"--private-key={certs['server.key']}", f"--certificate={certs['server.pem']}",
                   f"--ca-cert={certs['ca.pem']}")))
        d.wait_until(tcp_open("127.0.0.1", port), what="listening for SSL")
        remote = f"ssl:127.0.0.1:{port}"
        with NorthdSync(remote, ssl_key=str(certs["client.key"]),
                        ssl_cert=str(certs["client.pem"]), ssl_ca=str(certs["ca.pem"]),
                        timeout=30) as nb:
            assert nb.apply(Owner("node", "n1"), [LogicalSwitch("n1")]).inserted == 1
            assert not nb.apply(Owner("node", "n1"), [LogicalSwitch("n1")]).changed
        out = run(["ovn-nbctl", f"--db={remote}", f"--private-key={certs['client.key']}",
                   f"--certificate={certs['client.pem']}", f"--ca-cert={certs['ca.pem']}",
                   "ls-list"])
        assert "(n1)" in out
    finally:
        daemons.stop()


def _recv_all(conn: FastConnection) -> list[ovs.jsonrpc.Message]:
    out: list[ovs.jsonrpc.Message] = []
    while True:
        err, msg = conn.recv()
        if msg is None:
            assert err == errno.EAGAIN
            return out
        out.append(msg)


@pytest.mark.parametrize("split", [1, 3, 4093, 65536])
def test_fast_json_framing(split: int) -> None:
    msgs = [
        ovs.jsonrpc.Message.create_notify("update2", [None, {"T": {"u": {"insert": {
            "name": "pod-é€😀", "up": True, "down": False, "n": None, "i": -12345,
            "f": 1.5e3}}}}]),
        ovs.jsonrpc.Message.create_reply([{"rows": [{"big": "x" * 300_000}]}], 7),
        ovs.jsonrpc.Message.create_request("echo", []),
        ovs.jsonrpc.Message.create_reply({"true": [True, False, None]}, 8),
    ]
    data = "\n".join(ovs.json.to_string(m.to_json()) for m in msgs).encode()
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        conn = ovs.jsonrpc.Connection(ovs.stream.Stream(a, "test", 0))
        conn.__class__ = FastConnection
        conn._init_fast()
        got: list[ovs.jsonrpc.Message] = []
        for pos in range(0, len(data), split):
            b.sendall(data[pos:pos + split])
            got += _recv_all(conn)
        assert [m.to_json() for m in got] == [m.to_json() for m in msgs]
        b.sendall(b'{"id": 9, "result": [1, 2} garbage')
        _err, msg = conn.recv()
        assert msg is None and conn.get_status() == errno.EPROTO
    finally:
        a.close()
        b.close()
