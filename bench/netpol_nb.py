"""bench_netpol's view of the NB: an IDL replica that notes when the expected
state is there, and reads of the database (rows, transactions, file size)."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import ovs.db.idl  # noqa: E402
import ovs.poller  # noqa: E402

from bench.netpol_workload import Expected, Obj  # noqa: E402
from localcluster.ovn import OVN_NB_SCHEMA, OvnCentral  # noqa: E402
from northd_sync import OWNER_TYPE_KEY  # noqa: E402
from ovnkube.master.translate import netpol  # noqa: E402

OUR_TYPES = (netpol.POLICY_OWNER, netpol.NAMESPACE_OWNER, netpol.ADDRESS_SET_OWNER)


class NbWatch:
    """An IDL replica of our ACLs (owner type), port groups (port names) and
    address sets, noting when the whole expected state is there and when an
    address set first holds / stops holding a wanted address."""

    def __init__(self, remote: str) -> None:
        helper = ovs.db.idl.SchemaHelper(str(OVN_NB_SCHEMA))
        helper.register_columns("ACL", ["external_ids"])
        helper.register_columns("Port_Group", ["name", "ports"])
        helper.register_columns("Address_Set", ["name", "addresses"])
        helper.register_columns("Logical_Switch_Port", ["name"])
        self.idl = ovs.db.idl.Idl(remote, helper)
        self.idl.notify = self._notify
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.acl_type: dict[Any, str] = {}
        self.acl_count: collections.Counter[str] = collections.Counter()
        self.pgs: dict[str, frozenset[str]] = {}
        self.asets: dict[str, frozenset[str]] = {}
        self.expect: Expected | None = None
        self.bad: set[tuple[str, str]] = set()  # expected rows not (yet) as expected
        self.complete_at: float | None = None
        self.want_as: tuple[str, str, bool] | None = None  # (set, address, present)
        self.want_at: float | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> NbWatch:
        self.thread.start()
        return self

    def _check(self, table: str, name: str) -> None:
        ex = self.expect
        if ex is None:
            return
        if table == "Port_Group" and name in ex.port_groups:
            ok = self.pgs.get(name) == ex.port_groups[name]
        elif table == "Address_Set" and name in ex.address_sets:
            ok = name in self.asets and len(self.asets[name]) == len(ex.address_sets[name])
        else:
            return
        if ok:
            self.bad.discard((table, name))
        else:
            self.bad.add((table, name))

    def _notify(self, event: str, row: Any, updates: Any = None) -> None:
        table = row._table.name
        if table == "ACL":
            old = self.acl_type.pop(row.uuid, None)
            if old is not None:
                self.acl_count[old] -= 1
            if event != "delete":
                t = row.external_ids.get(OWNER_TYPE_KEY, "")
                self.acl_type[row.uuid] = t
                self.acl_count[t] += 1
            return
        if table not in ("Port_Group", "Address_Set"):
            return
        name = row.name
        store = self.pgs if table == "Port_Group" else self.asets
        if event == "delete":
            store.pop(name, None)
        elif table == "Port_Group":
            store[name] = frozenset(p.name for p in row.ports if p is not None)
        else:
            store[name] = frozenset(row.addresses)
        self._check(table, name)
        w = self.want_as
        if table == "Address_Set" and w is not None and w[0] == name and self.want_at is None \
                and (w[1] in store.get(name, frozenset())) == w[2]:
            self.want_at = time.monotonic()

    def _complete(self) -> bool:
        ex = self.expect
        return ex is not None and not self.bad and all(
            self.acl_count[t] == n for t, n in ex.acls.items())

    def expect_state(self, ex: Expected) -> None:
        with self.lock:
            self.expect = ex
            self.complete_at = None
            self.bad = {("Port_Group", n) for n in ex.port_groups} | \
                {("Address_Set", n) for n in ex.address_sets}
            for n in ex.port_groups:
                self._check("Port_Group", n)
            for n in ex.address_sets:
                self._check("Address_Set", n)
            if self._complete():
                self.complete_at = time.monotonic()

    def wait_complete(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.complete_at is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 1.0))
        return True

    def missing(self) -> str:
        with self.lock:
            ex = self.expect
            assert ex is not None
            by = collections.Counter(t for t, _ in self.bad)
            acls = ", ".join(f"{t} {self.acl_count[t]}/{n}" for t, n in ex.acls.items())
            return (f"{by['Port_Group']} port groups and {by['Address_Set']} address sets "
                    f"not as expected; ACLs {acls}")

    def want(self, aset: str, address: str, present: bool) -> bool:
        """Note when `aset` next holds (or stops holding) `address`; False if
        it already is so (nothing to wait for)."""
        with self.lock:
            self.want_as, self.want_at = (aset, address, present), None
            return (address in self.asets.get(aset, frozenset())) != present

    def wait_want(self, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.want_at is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.want_at

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.lock:
                seq = self.idl.change_seqno
                self.idl.run()
                if self.idl.has_ever_connected():
                    self.connected.set()
                if self.idl.change_seqno != seq:
                    if self.complete_at is None and self._complete():
                        self.complete_at = time.monotonic()
                    self.cond.notify_all()
            poller = ovs.poller.Poller()
            self.idl.wait(poller)
            poller.timer_wait(200)
            poller.block()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.idl.close()


# --- reading the NB database -----------------------------------------------------

def dump(remote: str, table: str) -> list[Obj]:
    """All rows of a table, values in OVSDB JSON notation."""
    out = subprocess.run(["ovsdb-client", "-f", "json", "dump", remote, "OVN_Northbound", table],
                         capture_output=True, text=True, check=True).stdout
    t = json.loads(out)
    return [dict(zip(t["headings"], row, strict=True)) for row in t["data"]]


def ext_ids(v: Any) -> dict[str, str]:
    return dict(v[1]) if isinstance(v, list) and v and v[0] == "map" else {}


def as_set(v: Any) -> list[Any]:
    """An OVSDB JSON set value (or a single atom) as a list."""
    if isinstance(v, list) and v and v[0] == "set":
        return list(v[1])
    return [v]


def nb_counts(remote: str) -> dict[str, tuple[int, int]]:
    """Table -> (all rows, rows of our owner types)."""
    out = {}
    for table in ("ACL", "Port_Group", "Address_Set"):
        rows = dump(remote, table)
        ours = sum(1 for r in rows if ext_ids(r["external_ids"]).get(OWNER_TYPE_KEY) in OUR_TYPES)
        out[table] = (len(rows), ours)
    return out


def nb_transactions(central: OvnCentral) -> int:
    """Transactions recorded in the NB file with northd_sync's comment."""
    out = subprocess.run(["ovsdb-tool", "show-log", str(central.workdir / "ovnnb_db.db")],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines()
               if line.startswith("record ") and '"northd_sync' in line)


def compact(central: OvnCentral) -> None:
    subprocess.run(["ovs-appctl", "-t", str(central.workdir / "ovnnb_db.ctl"),
                    "ovsdb-server/compact"], capture_output=True, check=False)


def db_size(central: OvnCentral) -> float:
    return os.path.getsize(central.workdir / "ovnnb_db.db") / 1e6

