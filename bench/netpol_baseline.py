"""bench_netpol's baseline: the master's ACL, Port_Group and Address_Set rows
written again in ONE raw JSON-RPC `transact` into a fresh NB."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.netpol_nb import OUR_TYPES, as_set, db_size, dump, ext_ids  # noqa: E402
from bench.netpol_workload import Obj  # noqa: E402
from localcluster.ovn import OvnCentral  # noqa: E402
from northd_sync import OWNER_TYPE_KEY  # noqa: E402


def transact(sock: Path, ops: list[Obj], timeout: float = 600) -> tuple[float, list[Any]]:
    """One JSON-RPC `transact` on the NB socket: (seconds to the reply, results)."""
    msg = json.dumps({"method": "transact", "params": ["OVN_Northbound", *ops],
                      "id": 1}).encode()
    dec = json.JSONDecoder()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        t0 = time.monotonic()
        s.sendall(msg)
        buf = ""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("ovsdb-server closed the connection")
            buf += chunk.decode()
            while buf.strip():
                try:
                    reply, end = dec.raw_decode(buf.lstrip())
                except ValueError:
                    break  # not complete yet
                buf = buf.lstrip()[end:]
                if reply.get("id") == 1 and "result" in reply:
                    took = time.monotonic() - t0
                    return took, reply["result"]
                if reply.get("method") == "echo":
                    s.sendall(json.dumps({"result": reply["params"],
                                          "id": reply["id"]}).encode())


@dataclass
class Snapshot:
    """Our rows as the master left them, to be written again by the baseline."""

    acls: list[Obj]
    port_groups: list[Obj]
    address_sets: list[Obj]
    lsp_names: dict[str, str]  # LSP uuid -> name


def snapshot(remote: str) -> Snapshot:
    def ours(rows: list[Obj]) -> list[Obj]:
        return [r for r in rows
                if ext_ids(r["external_ids"]).get(OWNER_TYPE_KEY) in OUR_TYPES]
    lsps = {r["_uuid"][1]: r["name"] for r in dump(remote, "Logical_Switch_Port")}
    return Snapshot(ours(dump(remote, "ACL")), ours(dump(remote, "Port_Group")),
                    ours(dump(remote, "Address_Set")), lsps)


def _row(r: Obj, skip: Iterable[str] = ()) -> Obj:
    drop = {"_uuid", "_version", *skip}
    return {c: v for c, v in r.items() if c not in drop and v != ["set", []] and
            v != ["map", []]}


def baseline(work: Path, snap: Snapshot) -> tuple[float, float, int]:
    """The snapshot's rows in one transaction into a fresh NB that already
    holds the ports: (seconds, DB file MB, rows written)."""
    central = OvnCentral(work / "baseline")
    try:
        central.start()
        sock = central.nb_sock
        used = sorted({u[1] for pg in snap.port_groups for u in as_set(pg["ports"]) if u})
        # Not timed: the ports the port groups name, on one switch.
        _, res = transact(sock, [
            {"op": "insert", "table": "Logical_Switch", "row": {"name": "bench", "ports": [
                "set", [["named-uuid", f"p{i}"] for i in range(len(used))]]}},
            *({"op": "insert", "table": "Logical_Switch_Port", "uuid-name": f"p{i}",
               "row": {"name": snap.lsp_names[u]}} for i, u in enumerate(used))])
        errors = [r for r in res if isinstance(r, dict) and "error" in r]
        if errors:
            raise RuntimeError(f"baseline ports: {errors[:2]}")
        new_uuid = {snap.lsp_names[u]: res[1 + i]["uuid"][1] for i, u in enumerate(used)}
        acl_ref = {a["_uuid"][1]: f"acl{i}" for i, a in enumerate(snap.acls)}
        ops: list[Obj] = [{"op": "insert", "table": "ACL", "uuid-name": acl_ref[a["_uuid"][1]],
                           "row": _row(a)} for a in snap.acls]
        for pg in snap.port_groups:
            row = _row(pg, ("ports", "acls"))
            ports = [["uuid", new_uuid[snap.lsp_names[u[1]]]] for u in as_set(pg["ports"]) if u]
            acls = [["named-uuid", acl_ref[u[1]]] for u in as_set(pg["acls"]) if u]
            row.update({"ports": ["set", ports], "acls": ["set", acls]})
            ops.append({"op": "insert", "table": "Port_Group", "row": row})
        ops += [{"op": "insert", "table": "Address_Set", "row": _row(a)}
                for a in snap.address_sets]
        took, res = transact(sock, ops)
        errors = [r for r in res if isinstance(r, dict) and "error" in r]
        if errors:
            raise RuntimeError(f"baseline transaction: {errors[:2]}")
        return took, db_size(central), len(ops)
    finally:
        central.stop()

