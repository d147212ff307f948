"""An in-memory `View` and executor: the diff on plain data.

Used by unit tests of the planner and handy for dry runs: it keeps rows as
dicts of canonical values and applies plans the way ovsdb-server would (strong
references keep non-root children alive, weak references are dropped with the
row they point to).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from northd_sync.diff import DEFAULTS, Link, OwnerPlan, Pending, Ref
from northd_sync.rows import (
    ID_KEY,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    ROW_TYPE_BY_TABLE,
    Column,
    Kind,
    Owner,
)

NON_ROOT = frozenset({"Logical_Switch_Port", "Logical_Router_Port", "ACL", "NAT",
                      "Logical_Router_Static_Route", "Logical_Router_Policy",
                      "Gateway_Chassis"})
NO_EXTERNAL_IDS = frozenset({"Load_Balancer_Group"})



class MemoryView:
    def __init__(self) -> None:
        self.rows: dict[str, dict[UUID, dict[str, Any]]] = {t: {} for t in ROW_TYPE_BY_TABLE}
        #: (parent table, parent column, parent uuid, child uuid)
        self.links: set[tuple[str, str, UUID, UUID]] = set()
        self.registry: dict[tuple[str, str], tuple[str, str]] = {}

    # -- building state by hand (rows made outside the engine) --
    def add(self, table: str, values: Mapping[str, Any],
            parent: tuple[str, str, UUID] | None = None) -> UUID:
        u = uuidlib.uuid4()
        self.rows[table][u] = dict(values)
        if parent is not None:
            self.links.add((parent[0], parent[1], parent[2], u))
        return u

    def find(self, table: str, name: str) -> dict[str, Any] | None:
        us = self.by_name(table, name)
        return self.rows[table][us[0]] if us else None

    def count(self, table: str) -> int:
        return len(self.rows[table])

    # -- View --
    def _ids(self, table: str, uuid: UUID) -> tuple[str, str, str] | None:
        row = self.rows[table][uuid]
        if table in NO_EXTERNAL_IDS:
            o = self.registry.get((table, row.get("name", "")))
            return (o[0], o[1], row["name"]) if o else None
        ext = row.get("external_ids") or {}
        if OWNER_TYPE_KEY in ext and OWNER_KEY in ext and ID_KEY in ext:
            return ext[OWNER_TYPE_KEY], ext[OWNER_KEY], ext[ID_KEY]
        return None

    def owned(self, owner: Owner) -> Mapping[tuple[str, str], Sequence[UUID]]:
        out: dict[tuple[str, str], list[UUID]] = {}
        for table, rows in self.rows.items():
            for u in rows:
                ids = self._ids(table, u)
                if ids and ids[0] == owner.type and ids[1] == owner.name:
                    out.setdefault((table, ids[2]), []).append(u)
        return out

    def owners(self, owner_type: str) -> set[str]:
        return {ids[1] for table, rows in self.rows.items() for u in rows
                if (ids := self._ids(table, u)) and ids[0] == owner_type}

    def by_name(self, table: str, name: str) -> Sequence[UUID]:
        return [u for u, r in self.rows[table].items() if r.get("name") == name]

    def ownership(self, table: str, uuid: UUID) -> tuple[str, str, str] | None:
        return self._ids(table, uuid)

    def name_of(self, table: str, uuid: UUID) -> str | None:
        row = self.rows[table].get(uuid)
        return row.get("name") if row else None

    def values(self, table: str, uuid: UUID, columns: Sequence[Column]) -> dict[str, Any]:
        row = self.rows[table][uuid]
        return {c.name: row.get(c.name, DEFAULTS[c.kind]) for c in columns}

    def parents(self, table: str, uuid: UUID) -> Iterable[tuple[str, str, UUID]]:
        return [(pt, pc, pu) for pt, pc, pu, cu in self.links if cu == uuid]

    def has_external_ids(self, table: str) -> bool:
        return table not in NO_EXTERNAL_IDS

    def registered(self, table: str, owner: Owner) -> set[str]:
        return {n for (t, n), o in self.registry.items()
                if t == table and o == (owner.type, owner.name)}

    def encode(self, table: str, column: Column, value: Any) -> Any:
        k = column.kind
        want: type | None = {
            Kind.STR: str, Kind.INT: int, Kind.BOOL: bool, Kind.OPT_STR: str,
            Kind.OPT_INT: int, Kind.OPT_BOOL: bool}.get(k)
        if want is not None:
            if value is None and k in (Kind.OPT_STR, Kind.OPT_INT, Kind.OPT_BOOL):
                return value
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f"expected {want.__name__}, got {type(value).__name__}")
        elif k is Kind.STR_SET and not all(isinstance(x, str) for x in value):
            raise ValueError("expected strings")
        elif k is Kind.MAP and not all(isinstance(a, str) and isinstance(b, str)
                                       for a, b in value.items()):
            raise ValueError("expected a string to string map")
        return value

    # -- executing plans, as ovsdb-server would --
    def execute(self, plans: Iterable[OwnerPlan]) -> None:
        plans = list(plans)

        def uid(ref: Ref) -> UUID:
            return ref.uuid if isinstance(ref, Pending) else ref

        def resolved(values: Mapping[str, Any]) -> dict[str, Any]:
            return {c: (frozenset(uid(x) for x in v)
                        if isinstance(v, frozenset) and any(isinstance(x, Pending) for x in v)
                        else v) for c, v in values.items()}

        def link(lk: Link, child: UUID) -> None:
            self.links.add((lk[0], lk[1], uid(lk[2]), child))

        gone: set[UUID] = set()
        for p in plans:
            for d in p.deletes:
                self.rows[d.table].pop(d.uuid, None)
                gone.add(d.uuid)
                self.links = {lk for lk in self.links if lk[3] != d.uuid}
            for i in p.inserts:
                self.rows[i.row.TABLE][i.ref.uuid] = resolved(i.values)
                for lk in i.links:
                    link(lk, i.ref.uuid)
            for u in p.updates:
                self.rows[u.row.TABLE][u.uuid].update(resolved(u.values))
                for lk in u.add_links:
                    link(lk, u.uuid)
                for pt, pc, pu in u.remove_links:
                    self.links.discard((pt, pc, pu, u.uuid))
            for table, name in p.register:
                self.registry[(table, name)] = (p.owner.type, p.owner.name)
            for table, name in p.unregister:
                self.registry.pop((table, name), None)
        self._collect(gone)

    def _collect(self, gone: set[UUID]) -> None:
        while gone:
            self.links = {lk for lk in self.links if lk[2] not in gone and lk[3] not in gone}
            for rows in self.rows.values():
                for r in rows.values():
                    for c, v in r.items():
                        if isinstance(v, frozenset) and v & gone:
                            r[c] = v - gone
            referenced = {lk[3] for lk in self.links}
            gone = set()
            for table in NON_ROOT:
                for u in list(self.rows[table]):
                    if u not in referenced:
                        del self.rows[table][u]
                        gone.add(u)
