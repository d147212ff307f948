"""The planner's `View` on top of the python-ovs IDL cache.

The IDL keeps a replica of the monitored NB tables. `IdlView` adds the indexes
the planner needs (rows by owner, by name, child -> parents), maintained
incrementally from the IDL's change notifications, so an apply costs time in
proportion to the owner's rows, not to the size of the database. Values are
read straight from the IDL's datums, without python-ovs' generic
`Row.__getattr__` conversion.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

import ovs.db.data
import ovs.db.error
import ovs.db.idl
import ovs.db.types
from ovs.db.idl import Row as OvsRow

from northd_sync.diff import DEFAULTS, Pending
from northd_sync.ovs_private import row_data, row_table_name, row_to_uuid
from northd_sync.rows import (
    ID_KEY,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    ROW_TYPE_BY_TABLE,
    ROW_TYPES,
    Column,
    Kind,
    Owner,
)

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "k8s.ovn.org/owned/"
NB_GLOBAL = "NB_Global"
METER_BAND = "Meter_Band"

#: parent table -> columns in which the engine keeps children (mutate-style)
PARENT_COLUMNS: dict[str, tuple[str, ...]] = {}
for _t in ROW_TYPES:
    for _p in _t.PARENTS:
        cols = PARENT_COLUMNS.setdefault(_p.table, ())
        if _p.column not in cols:
            PARENT_COLUMNS[_p.table] = (*cols, _p.column)

NAMED_TABLES = frozenset(t.TABLE for t in ROW_TYPES if t.NAMED)


def monitored_columns(schema_tables: Mapping[str, Any]) -> dict[str, list[str]]:
    """table -> columns to monitor: what we write, names, ownership, parent links."""
    want: dict[str, set[str]] = {}
    for t in ROW_TYPES:
        cols = want.setdefault(t.TABLE, set())
        cols.update(c.name for c in t.COLUMNS.values())
        cols.update(("name", "external_ids"))
    for table, pcols in PARENT_COLUMNS.items():
        want.setdefault(table, set()).update(pcols)
    want[METER_BAND] = {"action", "rate", "burst_size", "external_ids"}
    want[NB_GLOBAL] = {"external_ids"}
    out: dict[str, list[str]] = {}
    for table, cols in want.items():
        if table not in schema_tables:
            log.warning("NB schema has no table %s: rows of it cannot be written", table)
            continue
        have = schema_tables[table]["columns"]
        out[table] = sorted(c for c in cols if c in have)
    return out


def _scalar(datum: Any) -> Any:
    for a in datum.values:
        return a.value
    return None


def _strmap(datum: Any) -> dict[str, Any]:
    return {k.value: v.value for k, v in datum.values.items()}


def _uuids(datum: Any) -> frozenset[UUID]:
    return frozenset(a.value for a in datum.values)


def registry_key(table: str, name: str) -> str:
    return f"{REGISTRY_PREFIX}{table}/{name}"


class IdlView:
    """Indexes over an ovs.db.idl.Idl; call `on_change` from Idl.notify."""

    def __init__(self, tables: Mapping[str, Any]) -> None:
        self.tables = tables
        self._ext = {t: "external_ids" in tables[t].columns for t in tables}
        self._present = {t: frozenset(tables[t].columns) for t in tables}
        # uuid -> (table, name, (owner type, owner, key) | None)
        self._info: dict[UUID, tuple[str, str | None, tuple[str, str, str] | None]] = {}
        self._by_name: dict[str, dict[str, list[UUID]]] = {t: {} for t in tables}
        self._owned: dict[tuple[str, str], dict[tuple[str, str], list[UUID]]] = {}
        self._by_type: dict[str, dict[str, int]] = {}
        self._parents: dict[UUID, set[tuple[str, str, UUID]]] = {}
        self._children: dict[UUID, dict[str, frozenset[UUID]]] = {}
        self._registry: dict[tuple[str, str], tuple[str, str]] = {}
        self._registry_by_owner: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for table in tables:
            for row in tables[table].rows.values():
                self.on_change(ovs.db.idl.ROW_CREATE, row, None)

    # -- index maintenance --
    def _ids(self, table: str, row: OvsRow) -> tuple[str, str, str] | None:
        if not self._ext[table]:
            name = _scalar(row_data(row)["name"])
            o = self._registry.get((table, name))
            return (o[0], o[1], name) if o else None
        d = row_data(row)["external_ids"]
        if len(d.values) < 3:
            return None
        ext = _strmap(d)
        try:
            return ext[OWNER_TYPE_KEY], ext[OWNER_KEY], ext[ID_KEY]
        except KeyError:
            return None

    def _index(self, table: str, row: OvsRow) -> None:
        u = row.uuid
        name = _scalar(row_data(row)["name"]) if table in NAMED_TABLES else None
        ids = self._ids(table, row)
        self._info[u] = (table, name, ids)
        if name is not None:
            self._by_name[table].setdefault(name, []).append(u)
        if ids is not None:
            ok = (ids[0], ids[1])
            self._owned.setdefault(ok, {}).setdefault((table, ids[2]), []).append(u)
            bt = self._by_type.setdefault(ids[0], {})
            bt[ids[1]] = bt.get(ids[1], 0) + 1

    def _unindex(self, u: UUID) -> None:
        info = self._info.pop(u, None)
        if info is None:
            return
        table, name, ids = info
        if name is not None:
            lst = self._by_name[table].get(name)
            if lst is not None:
                lst.remove(u)
                if not lst:
                    del self._by_name[table][name]
        if ids is not None:
            ok = (ids[0], ids[1])
            rows = self._owned.get(ok)
            if rows is not None:
                lst = rows.get((table, ids[2]))
                if lst is not None:
                    lst.remove(u)
                    if not lst:
                        del rows[(table, ids[2])]
                if not rows:
                    del self._owned[ok]
            bt = self._by_type[ids[0]]
            bt[ids[1]] -= 1
            if not bt[ids[1]]:
                del bt[ids[1]]

    def _set_children(self, table: str, col: str, parent: UUID, kids: frozenset[UUID]) -> None:
        cur = self._children.setdefault(parent, {})
        old = cur.get(col, frozenset())
        if old == kids:
            return
        link = (table, col, parent)
        for k in old - kids:
            s = self._parents.get(k)
            if s is not None:
                s.discard(link)
                if not s:
                    del self._parents[k]
        for k in kids - old:
            self._parents.setdefault(k, set()).add(link)
        if kids:
            cur[col] = kids
        else:
            cur.pop(col, None)

    def _drop_children(self, table: str, parent: UUID) -> None:
        for col in list(self._children.get(parent, {})):
            self._set_children(table, col, parent, frozenset())
        self._children.pop(parent, None)

    def _load_registry(self, row: OvsRow | None) -> None:
        reg: dict[tuple[str, str], tuple[str, str]] = {}
        if row is not None:
            for k, v in _strmap(row_data(row)["external_ids"]).items():
                if not k.startswith(REGISTRY_PREFIX):
                    continue
                table, _, name = k[len(REGISTRY_PREFIX):].partition("/")
                try:
                    ot, o = json.loads(v)
                except (ValueError, TypeError):
                    log.warning("ignoring malformed ownership record %s=%r in NB_Global", k, v)
                    continue
                reg[(table, name)] = (str(ot), str(o))
        if reg == self._registry:
            return
        self._registry = reg
        self._registry_by_owner = {}
        for tn, o in reg.items():
            self._registry_by_owner.setdefault(o, set()).add(tn)
        for table in {t for t in self._ext if not self._ext[t] and t in ROW_TYPE_BY_TABLE}:
            for r in self.tables[table].rows.values():
                self._unindex(r.uuid)
                self._index(table, r)

    def on_change(self, event: str, row: OvsRow, updates: OvsRow | None) -> None:
        table = row_table_name(row)
        if table == NB_GLOBAL:
            self._load_registry(None if event == ovs.db.idl.ROW_DELETE else row)
            return
        if table not in ROW_TYPE_BY_TABLE:
            return
        u = row.uuid
        if event == ovs.db.idl.ROW_DELETE:
            self._unindex(u)
            if table in PARENT_COLUMNS:
                self._drop_children(table, u)
            return
        if event == ovs.db.idl.ROW_CREATE:
            self._unindex(u)
            self._index(table, row)
            for col in PARENT_COLUMNS.get(table, ()):
                self._set_children(table, col, u, _uuids(row_data(row)[col]))
            return
        changed = row_data(updates) if updates is not None else None
        if changed is None or "name" in changed or "external_ids" in changed:
            self._unindex(u)
            self._index(table, row)
        for col in PARENT_COLUMNS.get(table, ()):
            if changed is None or col in changed:
                self._set_children(table, col, u, _uuids(row_data(row)[col]))

    # -- View protocol --
    def owned(self, owner: Owner) -> Mapping[tuple[str, str], Sequence[UUID]]:
        return self._owned.get((owner.type, owner.name), {})

    def owners(self, owner_type: str) -> set[str]:
        out = set(self._by_type.get(owner_type, ()))
        # owners known only by an ownership record whose row is gone
        out.update(o for ot, o in self._registry_by_owner if ot == owner_type)
        return out

    def by_name(self, table: str, name: str) -> Sequence[UUID]:
        return self._by_name[table].get(name, ())

    def ownership(self, table: str, uuid: UUID) -> tuple[str, str, str] | None:
        info = self._info.get(uuid)
        return info[2] if info else None

    def name_of(self, table: str, uuid: UUID) -> str | None:
        info = self._info.get(uuid)
        return info[1] if info else None

    def values(self, table: str, uuid: UUID, columns: Sequence[Column]) -> dict[str, Any]:
        data = row_data(self.tables[table].rows[uuid])
        present = self._present[table]
        out: dict[str, Any] = {}
        for c in columns:
            d = data.get(c.name)
            if d is None:
                # python-ovs leaves columns at their default out of row_data
                out[c.name] = DEFAULTS[c.kind] if c.name in present else None
                continue
            k = c.kind
            if k is Kind.MAP:
                out[c.name] = _strmap(d)
            elif k is Kind.STR_SET or k is Kind.REF_SET:
                out[c.name] = frozenset(a.value for a in d.values)
            elif k is Kind.BANDS:
                bands = self.tables[METER_BAND].rows
                vals = set()
                for a in d.values:
                    b = bands.get(a.value)
                    if b is not None:
                        bd = row_data(b)
                        vals.add((_scalar(bd["action"]), _scalar(bd["rate"]),
                                  _scalar(bd["burst_size"])))
                out[c.name] = frozenset(vals)
            else:
                out[c.name] = _scalar(d)
        return out

    def parents(self, table: str, uuid: UUID) -> Iterable[tuple[str, str, UUID]]:
        return self._parents.get(uuid, ())

    def has_external_ids(self, table: str) -> bool:
        return self._ext.get(table, True)

    def registered(self, table: str, owner: Owner) -> set[str]:
        return {n for t, n in self._registry_by_owner.get((owner.type, owner.name), ())
                if t == table}

    def encode(self, table: str, column: Column, value: Any) -> Any:
        try:
            col = self.tables[table].columns[column.name]
        except KeyError:
            raise ValueError(f"the NB schema of this server has no column {table}.{column.name}"
                             ) from None
        return encode_value(col, column.kind, value)


def to_python(kind: Kind, value: Any) -> Any:
    """Canonical value -> the Python form python-ovs' Datum.from_python takes."""
    if kind in (Kind.OPT_STR, Kind.OPT_INT, Kind.OPT_BOOL):
        return [] if value is None else value
    if kind is Kind.STR_SET or kind is Kind.REF_SET:
        return [x.uuid if isinstance(x, Pending) else x for x in value]
    return value


_STRING = ovs.db.types.StringType
_Atom = ovs.db.data.Atom
_Datum = ovs.db.data.Datum
_plain_cache: dict[int, bool] = {}


def _plain_string(base: Any) -> bool:
    """A string base type without constraints (no enum, no length limits)."""
    if base is None:
        return False
    r = _plain_cache.get(id(base))
    if r is None:
        r = (base.type == _STRING and base.enum is None and base.min_length == 0
             and base.max_length == sys.maxsize)
        _plain_cache[id(base)] = r
    return r


def _fast_encode(t: Any, kind: Kind, value: Any) -> Any:
    """The common cases of Datum.from_python, without its per-atom overhead.
    Returns None when the generic path must decide."""
    if kind is Kind.STR:
        if type(value) is str and _plain_string(t.key) and t.n_min == 1:
            return _Datum(t, {_Atom(_STRING, value): None})
    elif kind is Kind.STR_SET:
        if (_plain_string(t.key) and t.value is None and t.n_min <= len(value) <= t.n_max
                and all(type(v) is str for v in value)):
            return _Datum(t, {_Atom(_STRING, v): None for v in value})
    elif (kind is Kind.MAP and _plain_string(t.key) and _plain_string(t.value)
          and len(value) <= t.n_max
          and all(type(k) is str and type(v) is str for k, v in value.items())):
        return _Datum(t, {_Atom(_STRING, k): _Atom(_STRING, v) for k, v in value.items()})
    return None


def encode_value(col: Any, kind: Kind, value: Any) -> Any:
    """Validate against the column type; returns a Datum (or the bands for BANDS)."""
    fast = _fast_encode(col.type, kind, value)
    if fast is not None:
        return fast
    if kind is Kind.BANDS:
        for a, r, b in value:
            if a != "drop" or not isinstance(r, int) or r < 1 or not isinstance(b, int) or b < 0:
                raise ValueError(f"bad meter band (action={a!r}, rate={r!r}, burst_size={b!r})")
        return value
    if kind in (Kind.INT, Kind.OPT_INT) and isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    try:
        return ovs.db.data.Datum.from_python(col.type, to_python(kind, value),
                                             row_to_uuid)
    except ovs.db.error.Error as e:
        raise ValueError(str(e)) from None
