"""The Planner: one owner's desired rows against the View -> an OwnerPlan.

Pure code (see `diff` for what a plan is made of). A `Planner` plans the owners
of one batch in turn. Each owner's plan is all-or-nothing: if any of its rows
is invalid (a missing parent, a name held by someone else, a bad value) the
planner raises and nothing of that owner is kept. Rows created or deleted by
plans earlier in the batch are visible to later plans, so a pod port can be
created in the same transaction as its node's switch.

Planning one owner, step by step (`Planner.plan`):
1. `_desired`: its rows by (table, key), two different rows with one key refused;
2. `_release`: its rows in the DB that are not desired (and duplicates) deleted;
3. per desired row, parents first: `_values` (canonical column values, names
   resolved to rows) and then `_insert` (a row not in the DB) or `_update`
   (only the columns and parent links that differ);
4. `_plan_registry`: ownership records of tables without external_ids;
5. `_Scratch.merge`: what this owner deleted, created and linked becomes
   visible to the owners planned after it.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from northd_sync.diff import (
    DEFAULTS,
    ClassInfo,
    Delete,
    Insert,
    Link,
    OwnerPlan,
    Pending,
    Ref,
    Update,
    View,
    as_dict,
    canonical,
    class_info,
    column_by_name,
    plain,
    table_columns,
    table_rank,
)
from northd_sync.errors import (
    AmbiguousReferenceError,
    ConflictError,
    InvalidRowError,
    MissingReferenceError,
)
from northd_sync.rows import ID_KEY, OWNER_KEY, OWNER_TYPE_KEY, Kind, Owner, Parent, Row

#: tables without external_ids whose ownership NB_Global records
_REGISTRY_TABLES = ("Load_Balancer_Group",)


class _Scratch:
    """One owner's planning state, merged into the Planner only when the
    whole owner plan succeeded."""

    __slots__ = ("deleted", "keep", "local_deleted", "new_links", "pending")

    def __init__(self, deleted: set[UUID]) -> None:
        #: rows deleted by this batch so far, this owner's included
        self.deleted = deleted
        self.local_deleted: set[UUID] = set()
        #: (table, key) -> the DB row kept for a desired row
        self.keep: dict[tuple[str, str], UUID] = {}
        self.pending: dict[tuple[str, str], Pending] = {}
        #: existing parents this owner's rows are linked into: (uuid, table)
        self.new_links: list[tuple[UUID, str]] = []

    def merge(self, planner: Planner, owner: Owner) -> None:
        if self.local_deleted:
            planner.deleted |= self.local_deleted
            for u in self.local_deleted:
                planner.deleted_by[u] = owner
        if self.pending:
            planner.pending.update(self.pending)
        for u, ptable in self.new_links:
            planner.linked.setdefault(u, []).append((owner, ptable))


class Planner:
    """Plans the owners of one batch against a View (see module doc)."""

    def __init__(self, view: View) -> None:
        self.view = view
        self.deleted: set[UUID] = set()
        self.pending: dict[tuple[str, str], Pending] = {}
        #: existing parents that plans of this batch add children to:
        #: uuid -> [(owner, parent table)]
        self.linked: dict[UUID, list[tuple[Owner, str]]] = {}
        self.deleted_by: dict[UUID, Owner] = {}
        self._registry_tables = [t for t in _REGISTRY_TABLES if not view.has_external_ids(t)]

    def plan(self, owner: Owner, rows: Sequence[Row],
             memo: Mapping[tuple[str, str], UUID] | None = None) -> OwnerPlan:
        """Plan one owner. `memo`: UUIDs given to its new rows by an earlier
        attempt of the same change (reused, see Pending)."""
        plan = OwnerPlan(owner)
        desired = self._desired(owner, rows)
        s = self._release(owner, desired, plan)
        order = desired if len(desired) < 2 else sorted(desired, key=table_rank)
        for k in order:
            r = desired[k]
            info = class_info(type(r))
            values, links = self._values(owner, r, info, s)
            cur_uuid = s.keep.get(k)
            if cur_uuid is None:
                self._insert(owner, r, info, values, links, memo, plan, s)
            else:
                self._update(owner, r, info, cur_uuid, values, links, plan, s)
        if self._registry_tables:
            self._plan_registry(owner, desired, plan)
        s.merge(self, owner)
        return plan

    # --- the steps ---------------------------------------------------------------

    @staticmethod
    def _desired(owner: Owner, rows: Sequence[Row]) -> dict[tuple[str, str], Row]:
        desired: dict[tuple[str, str], Row] = {}
        for r in rows:
            if not isinstance(r, Row) or not r.TABLE:
                raise TypeError(f"{owner}: not a northd_sync row: {r!r}")
            k = (r.TABLE, r.key)
            if k in desired and desired[k] != r:
                raise InvalidRowError(owner, r.TABLE, r.key, "key", r.key,
                                      "two different rows of this owner have the same key")
            desired[k] = r
        return desired

    def _release(self, owner: Owner, desired: Mapping[tuple[str, str], Row],
                 plan: OwnerPlan) -> _Scratch:
        """Delete the owner's rows that are not desired (and all but one of
        duplicates); the scratch state records the rows kept."""
        view = self.view
        deleted = self.deleted
        s = _Scratch(deleted)
        for k, uuids in view.owned(owner).items():
            live = [u for u in uuids if u not in deleted]
            if not live:
                continue
            if k in desired:
                if len(live) > 1:
                    live = sorted(live, key=str)
                s.keep[k] = live[0]
                extra = live[1:]          # duplicates: keep one
            else:
                extra = live
            for u in extra:
                plan.deletes.append(Delete(k[0], k[1], u, list(view.parents(k[0], u)),
                                           view.name_of(k[0], u)))
                s.local_deleted.add(u)
        if s.local_deleted:
            s.deleted = deleted | s.local_deleted
        return s

    def _values(self, owner: Owner, r: Row, info: ClassInfo, s: _Scratch
                ) -> tuple[dict[str, Any], list[Link]]:
        """The row's canonical column values (references resolved) and the
        parent rows it is to be linked into."""
        values: dict[str, Any] = {}
        for fname, cname, kind, ref_table in info.spec:
            v = getattr(r, fname)
            if kind is Kind.STR_SET:
                v = frozenset(v)
            elif kind is Kind.MAP:
                v = as_dict(v)
            elif kind is Kind.REF_SET:
                v = frozenset(self._resolve(owner, r, fname, ref_table, n, s) for n in v)
            elif kind is Kind.BANDS:
                v = canonical(kind, v)
            values[cname] = v
        if self.view.has_external_ids(r.TABLE):
            ext = dict(as_dict(r.external_ids))
            ext[OWNER_TYPE_KEY] = owner.type
            ext[OWNER_KEY] = owner.name
            ext[ID_KEY] = r.key
            values["external_ids"] = ext
        links: list[Link] = [(p.table, p.column, self._resolve(owner, r, p.field, p.table,
                                                                pname, s))
                             for p in info.parents for pname in _parent_names(r, p)]
        return values, links

    def _insert(self, owner: Owner, r: Row, info: ClassInfo, values: dict[str, Any],
                links: list[Link], memo: Mapping[tuple[str, str], UUID] | None,
                plan: OwnerPlan, s: _Scratch) -> None:
        table = r.TABLE
        name = r.row_name
        if name is not None:
            self._check_name(owner, r, name, None, s)
        uuid = memo.get((table, r.key)) if memo else None
        if uuid is None:
            uuid = uuidlib.uuid4()
        ref = Pending(table, r.key, name, owner, uuid)
        if name is not None:
            s.pending[(table, name)] = ref
        # Columns left at their default need not be sent (nor checked).
        kinds = info.kinds
        encoded = self._encode(owner, r, {
            c: v for c, v in values.items() if (kc := kinds[c]) is None or v != DEFAULTS[kc]})
        plan.inserts.append(Insert(r, ref, values, encoded, links))
        if not self.view.has_external_ids(table):
            plan.register.append((table, r.key))
        s.new_links += [(lk[2], lk[0]) for lk in links if isinstance(lk[2], UUID)]

    def _update(self, owner: Owner, r: Row, info: ClassInfo, cur_uuid: UUID,
                values: dict[str, Any], links: list[Link], plan: OwnerPlan, s: _Scratch
                ) -> None:
        table = r.TABLE
        current = self.view.values(table, cur_uuid,
                                   table_columns(table, self.view.has_external_ids(table)))
        changes: dict[str, tuple[Any, Any]] = {}
        changed_values: dict[str, Any] = {}
        for cname, new in values.items():
            old = current.get(cname)
            if old != new:
                changes[cname] = (old, new)
                changed_values[cname] = new
        if "name" in changed_values:
            self._check_name(owner, r, changed_values["name"], cur_uuid, s)
        add_links: list[Link] = []
        remove_links: list[tuple[str, str, UUID]] = []
        if info.parents:
            have = {lk for lk in self.view.parents(table, cur_uuid)
                    if (lk[0], lk[1]) in info.declared and lk[2] not in s.deleted}
            want = set(links)
            if have != want:
                add_links = [lk for lk in links if lk not in have]
                remove_links = sorted(have - want, key=str)
                for p in info.parents:
                    old_names = sorted(self._name(lk[0], lk[2]) for lk in have
                                       if (lk[0], lk[1]) == (p.table, p.column))
                    new_names = sorted(_parent_names(r, p))
                    if old_names != new_names:
                        changes[p.field] = (tuple(old_names), tuple(new_names))
                s.new_links += [(lk[2], lk[0]) for lk in add_links if isinstance(lk[2], UUID)]
        if changes:
            encoded = self._encode(owner, r, changed_values)
            plan.updates.append(Update(r, cur_uuid, changes, changed_values, encoded,
                                       add_links, remove_links))

    def _plan_registry(self, owner: Owner, desired: Mapping[tuple[str, str], Row],
                       plan: OwnerPlan) -> None:
        for table in self._registry_tables:
            for name in sorted(self.view.registered(table, owner)):
                if (table, name) not in desired:
                    plan.unregister.append((table, name))

    # --- helpers -----------------------------------------------------------------

    def _resolve(self, owner: Owner, r: Row, fname: str, ref_table: str | None, name: str,
                 s: _Scratch) -> Ref:
        assert ref_table is not None
        p = s.pending.get((ref_table, name)) or self.pending.get((ref_table, name))
        if p is not None:
            return p
        found = self.view.by_name(ref_table, name)
        if len(found) == 1 and found[0] not in s.deleted:
            return found[0]
        found = [u for u in found if u not in s.deleted]
        if len(found) == 1:
            return found[0]
        if not found:
            raise MissingReferenceError(owner, r.TABLE, r.key, fname, ref_table, name)
        raise AmbiguousReferenceError(owner, r.TABLE, r.key, fname, ref_table, name,
                                      len(found))

    def _check_name(self, owner: Owner, r: Row, name: str, self_uuid: UUID | None,
                    s: _Scratch) -> None:
        p = s.pending.get((r.TABLE, name)) or self.pending.get((r.TABLE, name))
        if p is not None:
            raise ConflictError(owner, r.TABLE, r.key, name,
                                f"is being created by {p.owner} (key {p.key!r})")
        for u in self.view.by_name(r.TABLE, name):
            if u == self_uuid or u in s.deleted:
                continue
            o = self.view.ownership(r.TABLE, u)
            holder = (f"belongs to {o[0]}/{o[1]} (key {o[2]!r})" if o else
                      "is not managed by northd_sync (no k8s.ovn.org/owner external_ids)")
            raise ConflictError(owner, r.TABLE, r.key, name, holder)

    def _name(self, table: str, ref: Ref) -> str:
        if isinstance(ref, Pending):
            return ref.name or ref.key
        return self.view.name_of(table, ref) or str(ref)

    def _encode(self, owner: Owner, r: Row, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        cols = column_by_name(type(r))
        encode = self.view.encode
        for cname, v in values.items():
            col = cols[cname]
            if col.kind is Kind.REF_SET and any(isinstance(x, Pending) for x in v):
                continue        # encoded by the executor once the rows exist
            try:
                out[cname] = encode(r.TABLE, col, v)
            except ValueError as e:
                raise InvalidRowError(owner, r.TABLE, r.key, cname, plain(v), str(e)) from None
        return out

    def dangling(self) -> dict[Owner, tuple[str, str, Owner]]:
        """Owners whose plan links a child into a parent that a later plan of
        the same batch deletes (their child would vanish with the parent):
        owner -> (parent table, parent name, owner deleting it)."""
        out: dict[Owner, tuple[str, str, Owner]] = {}
        for u in self.linked.keys() & self.deleted:
            for o, ptable in self.linked[u]:
                if o != self.deleted_by[u]:
                    out.setdefault(o, (ptable, self._name(ptable, u), self.deleted_by[u]))
        return out


def _parent_names(r: Row, p: Parent) -> tuple[str, ...]:
    v = getattr(r, p.field)
    if p.many:
        return tuple(v)
    return () if v is None else (v,)
