"""Reading the NB as a test does: rows through the real ovn-nbctl, and every
committed transaction from the NB database file (`ovsdb-tool show-log -m`: one
record per transaction, with the writer's comment, `northd_sync: N owner(s)`,
and the rows it touched)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from localcluster.ovn import OvnCentral


def _ovs_value(v: Any) -> Any:
    """ovn-nbctl --format=json cell -> Python value."""
    if isinstance(v, list) and v and v[0] == "map":
        return {k: _ovs_value(x) for k, x in v[1]}
    if isinstance(v, list) and v and v[0] == "set":
        return [_ovs_value(x) for x in v[1]]
    if isinstance(v, list) and v and v[0] == "uuid":
        return v[1]
    return v


class Nbctl(Protocol):
    """What runs ovn-nbctl: an OvnCentral, or a local cluster (Cluster)."""

    def nbctl(self, *args: str) -> str: ...


def nb_table(central: Nbctl, table: str, columns: str) -> list[dict[str, Any]]:
    out = json.loads(central.nbctl("--format=json", f"--columns={columns}", "list", table))
    return [{h: _ovs_value(c) for h, c in zip(out["headings"], row, strict=True)}
            for row in out["data"]]


@dataclass
class Txn:
    index: int
    comment: str
    #: (table, row name, op) with op "insert", "update" or "delete"
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def touched(self, table: str) -> set[str]:
        return {name for t, name, _ in self.rows if t == table}


_RECORD = re.compile(r'^record (\d+): \S+ \S+(?: "(.*)")?$')
_ROW = re.compile(r'^  table (\S+) (insert row|row) "?(.*?)"? \([0-9a-f]+\)')


def nb_log(central: OvnCentral) -> list[Txn]:
    """Every transaction recorded in the NB database file, oldest first."""
    out = subprocess.run(["ovsdb-tool", "show-log", "-m", str(central.workdir / "ovnnb_db.db")],
                         capture_output=True, text=True, check=True).stdout
    txns: list[Txn] = []
    for line in out.splitlines():
        if m := _RECORD.match(line):
            txns.append(Txn(int(m.group(1)), m.group(2) or ""))
        elif (m := _ROW.match(line)) and txns:
            op = "insert" if m.group(2) == "insert row" else "update"
            txns[-1].rows.append((m.group(1), m.group(3), op))
        elif line.strip() == "delete row" and txns and txns[-1].rows:
            t, name, _ = txns[-1].rows[-1]
            txns[-1].rows[-1] = (t, name, "delete")
    return txns


def ours(txns: list[Txn], since: int) -> list[Txn]:
    """The master's transactions after record `since`."""
    return [t for t in txns if t.index > since and t.comment.startswith("northd_sync")]


def log_mark(central: OvnCentral) -> int:
    txns = nb_log(central)
    return txns[-1].index if txns else -1


def settle(central: OvnCentral, quiet: float = 1.5, timeout: float = 30) -> int:
    """Wait until the NB log has not grown for `quiet` seconds; its last record."""
    deadline = time.monotonic() + timeout
    last, since = log_mark(central), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = log_mark(central)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    return last
