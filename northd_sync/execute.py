"""Write planned changes into one python-ovs transaction, and check that the
IDL cache shows a committed transaction (read-your-writes)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

import ovs.db.data
import ovs.db.idl
import ovs.db.types
from ovs.db.idl import Row as OvsRow

from northd_sync.cache import METER_BAND, NB_GLOBAL, encode_value, registry_key
from northd_sync.diff import Link, OwnerPlan, Pending, column_kinds
from northd_sync.ovs_private import row_data, row_to_uuid, write_datum
from northd_sync.rows import Kind

log = logging.getLogger(__name__)

_Atom = ovs.db.data.Atom
_UUID = ovs.db.types.UuidType


class StaleCache(Exception):
    """A row the plan relies on vanished from the cache: re-plan."""


class Writer:
    """Turns plans into IDL operations on `txn`."""

    def __init__(self, tables: Mapping[str, Any], txn: ovs.db.idl.Transaction,
                 persist_uuid: bool = True) -> None:
        self.tables = tables
        self.txn = txn
        self.persist_uuid = persist_uuid
        self.rows: dict[Pending, OvsRow] = {}
        self.deleted: set[UUID] = set()
        self.verified: set[UUID] = set()
        self.stats: Counter[tuple[str, str]] = Counter()

    def write(self, plans: Sequence[OwnerPlan]) -> None:
        tables = self.tables
        for p in plans:
            self.deleted.update(d.uuid for d in p.deletes)
        for p in plans:
            for d in p.deletes:
                row = tables[d.table].rows.get(d.uuid)
                if row is None:
                    continue
                if "external_ids" in tables[d.table].columns:
                    row.verify("external_ids")      # still ours when deleted
                for pt, pc, pu in d.parents:
                    self._unlink(pt, pc, pu, row)
                row.delete()
                self.stats[(d.table, "delete")] += 1
        # Create every new row first so that references between them resolve.
        for p in plans:
            for i in p.inserts:
                t = i.row.TABLE
                self.rows[i.ref] = self.txn.insert(tables[t], new_uuid=i.ref.uuid,
                                                   persist_uuid=self.persist_uuid)
                self.stats[(t, "insert")] += 1
        for p in plans:
            for i in p.inserts:
                row = self.rows[i.ref]
                self._columns(i.row.TABLE, type(i.row), row, i.values, i.encoded)
                for lk in i.links:
                    self._link(lk, row)
            for u in p.updates:
                t = u.row.TABLE
                row = tables[t].rows.get(u.uuid)
                if row is None:
                    raise StaleCache(f"{t} {u.row.key!r} vanished")
                if "external_ids" in tables[t].columns:
                    row.verify("external_ids")      # still ours, still there
                self._columns(t, type(u.row), row, u.values, u.encoded)
                for lk in u.add_links:
                    self._link(lk, row)
                for pt, pc, pu in u.remove_links:
                    self._unlink(pt, pc, pu, row)
                self.stats[(t, "update")] += 1
            self._registry(p)

    def _columns(self, table: str, cls: type, row: OvsRow, values: Mapping[str, Any],
                 encoded: Mapping[str, Any]) -> None:
        columns = self.tables[table].columns
        kinds = column_kinds(cls)
        for cname, datum in encoded.items():
            col = columns[cname]
            if kinds[cname] is Kind.BANDS:
                self._bands(row, col, datum)
            else:
                write_datum(self.txn, row, col, datum)
        for cname, v in values.items():
            if (cname not in encoded and kinds[cname] is Kind.REF_SET
                    and any(isinstance(x, Pending) for x in v)):
                # a reference set naming rows created by this transaction
                col = columns[cname]
                write_datum(self.txn, row, col, encode_value(col, Kind.REF_SET, v))

    def _bands(self, meter: OvsRow, col: Any, bands: frozenset[tuple[str, int, int]]) -> None:
        btable = self.tables[METER_BAND]
        uuids = []
        for a, r, b in sorted(bands):
            band = self.txn.insert(btable)
            for cname, v in (("action", a), ("rate", r), ("burst_size", b)):
                bc = btable.columns[cname]
                write_datum(self.txn, band, bc,
                       ovs.db.data.Datum.from_python(bc.type, v, row_to_uuid))
            uuids.append(band.uuid)
        write_datum(self.txn, meter, col,
               ovs.db.data.Datum.from_python(col.type, uuids, row_to_uuid))

    def _parent(self, table: str, ref: Pending | UUID) -> OvsRow | None:
        if isinstance(ref, Pending):
            return self.rows[ref]
        if ref in self.deleted:
            return None
        row = self.tables[table].rows.get(ref)
        return row

    def _link(self, lk: Link, child: OvsRow) -> None:
        pt, pc, ref = lk
        parent = self._parent(pt, ref)
        if parent is None:
            raise StaleCache(f"{pt} {ref} vanished")
        if not isinstance(ref, Pending) and ref not in self.verified:
            parent.verify("name")          # the parent must still exist at commit
            self.verified.add(ref)
        parent.addvalue(pc, child)
        self.stats[(pt, "mutate")] += 1

    def _unlink(self, pt: str, pc: str, pu: UUID, child: OvsRow) -> None:
        if pu in self.deleted:
            return
        parent = self.tables[pt].rows.get(pu)
        if parent is None:
            return
        parent.delvalue(pc, child)
        self.stats[(pt, "mutate")] += 1

    def _registry(self, p: OwnerPlan) -> None:
        if not (p.register or p.unregister):
            return
        nbg_rows = self.tables[NB_GLOBAL].rows
        nbg = next(iter(nbg_rows.values()), None)
        if nbg is None:
            nbg = self.txn.insert(self.tables[NB_GLOBAL])
        for table, name in p.unregister:
            nbg.delkey("external_ids", registry_key(table, name))
        for table, name in p.register:
            nbg.setkey("external_ids", registry_key(table, name),
                       json.dumps([p.owner.type, p.owner.name]))
        self.stats[(NB_GLOBAL, "mutate")] += 1


def visible(tables: Mapping[str, Any], plans: Sequence[OwnerPlan],
            txn: ovs.db.idl.Transaction, persist_uuid: bool) -> bool:
    """Does the IDL cache show what the committed transaction wrote?"""
    def linked(lk: Link, child: UUID | None) -> bool:
        pt, pc, ref = lk
        pu = ref.uuid if isinstance(ref, Pending) else ref
        if not persist_uuid and isinstance(ref, Pending):
            pu = txn.get_insert_uuid(ref.uuid)
        parent = tables[pt].rows.get(pu)
        if parent is None or child is None:
            return True         # deleted since: nothing to wait for
        return _Atom(_UUID, child) in row_data(parent)[pc].values

    for p in plans:
        for i in p.inserts:
            u = i.ref.uuid if persist_uuid else txn.get_insert_uuid(i.ref.uuid)
            if u is not None and u not in tables[i.row.TABLE].rows:
                return False
            if not all(linked(lk, u) for lk in i.links):
                return False
        for d in p.deletes:
            if d.uuid in tables[d.table].rows:
                return False
        for up in p.updates:
            row = tables[up.row.TABLE].rows.get(up.uuid)
            if row is None:
                continue
            for cname, datum in up.encoded.items():
                if isinstance(datum, ovs.db.data.Datum) and row_data(row)[cname] != datum:
                    return False
            if not all(linked(lk, up.uuid) for lk in up.add_links):
                return False
    return True
