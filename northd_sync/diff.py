"""The diff: desired rows of an owner versus what the database holds -> a plan.

Pure code. It reads the database through the small `View` protocol, which the
engine implements on top of the python-ovs IDL cache (`cache.IdlView`) and
the tests implement on plain dicts (`memory.MemoryView`). Nothing here does I/O
or knows about python-ovs.

A `Planner` plans the owners of one batch in turn. Each owner's plan is
all-or-nothing: if any of its rows is invalid (a missing parent, a name held by
someone else, a bad value) the planner raises and nothing of that owner is
kept. Rows created or deleted by plans earlier in the batch are visible to later
plans, so a pod port can be created in the same transaction as its node's
switch.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from northd_sync.errors import (
    AmbiguousReferenceError,
    ConflictError,
    InvalidRowError,
    MissingReferenceError,
)
from northd_sync.rows import (
    ID_KEY,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    ROW_TYPE_BY_TABLE,
    TABLE_RANK,
    Column,
    FrozenMap,
    Kind,
    MeterBand,
    Owner,
    Parent,
    Row,
)

log = logging.getLogger(__name__)

EXTERNAL_IDS = Column("external_ids", Kind.MAP)


class Pending:
    """A row inserted by a plan of the current batch; stands in for its UUID.

    `uuid` is the UUID the row will have (inserted with persist_uuid): it stays
    the same when the same apply is retried, so a retry after an ambiguous
    failure (connection lost after the commit) cannot insert the row twice.
    """

    __slots__ = ("key", "name", "owner", "table", "uuid")

    def __init__(self, table: str, key: str, name: str | None, owner: Owner, uuid: UUID
                 ) -> None:
        self.table = table
        self.key = key
        self.name = name
        self.owner = owner
        self.uuid = uuid

    def __repr__(self) -> str:
        return f"Pending({self.table} {self.key!r})"


Ref = UUID | Pending
Link = tuple[str, str, Ref]   # (parent table, parent column, parent)


class View(Protocol):
    """Read access to the database contents, as the planner needs it."""

    def owned(self, owner: Owner) -> Mapping[tuple[str, str], Sequence[UUID]]:
        """Rows carrying this owner's tags: (table, key) -> UUIDs (normally one)."""

    def owners(self, owner_type: str) -> set[str]:
        """Names of the owners of this type that own at least one row."""

    def by_name(self, table: str, name: str) -> Sequence[UUID]:
        """Every row of `table` with this name, owned or not."""

    def ownership(self, table: str, uuid: UUID) -> tuple[str, str, str] | None:
        """(owner type, owner, key) of a row, None if it is not ours."""

    def name_of(self, table: str, uuid: UUID) -> str | None: ...

    def values(self, table: str, uuid: UUID, columns: Sequence[Column]) -> dict[str, Any]:
        """Current values of the columns, in the planner's canonical form."""

    def parents(self, table: str, uuid: UUID) -> Iterable[tuple[str, str, UUID]]:
        """(parent table, parent column, parent UUID) of every row referencing this one
        through a parent relation the engine maintains."""

    def has_external_ids(self, table: str) -> bool: ...

    def registered(self, table: str, owner: Owner) -> set[str]:
        """For tables without external_ids: names registered to this owner."""

    def encode(self, table: str, column: Column, value: Any) -> Any:
        """Check a value against the schema; return what the executor writes.
        Raises ValueError with the reason when it is not valid."""


# --- canonical values -------------------------------------------------------

#: canonical value of a column left at its OVSDB default
DEFAULTS: dict[Kind, Any] = {
    Kind.STR: "", Kind.INT: 0, Kind.BOOL: False, Kind.OPT_STR: None, Kind.OPT_INT: None,
    Kind.OPT_BOOL: None, Kind.STR_SET: frozenset(), Kind.MAP: {}, Kind.REF_SET: frozenset(),
    Kind.BANDS: frozenset(),
}

def _as_dict(m: Mapping[str, str]) -> dict[str, str]:
    if isinstance(m, FrozenMap):
        return m._d  # read-only use: compared, never mutated
    return dict(m)


def canonical(kind: Kind, value: Any) -> Any:
    """The form values are compared in: sets for sets, dicts for maps."""
    if kind is Kind.STR_SET:
        return frozenset(value)
    if kind is Kind.MAP:
        return _as_dict(value)
    if kind is Kind.BANDS:
        return frozenset((b.action, b.rate, b.burst_size) for b in value)
    return value


def bands_from_canonical(value: frozenset[tuple[str, int, int]]) -> list[MeterBand]:
    return [MeterBand(rate=r, burst_size=b, action=a) for a, r, b in sorted(value)]


_SPECS: dict[type[Row], tuple[tuple[str, Column], ...]] = {}


def row_spec(cls: type[Row]) -> tuple[tuple[str, Column], ...]:
    spec = _SPECS.get(cls)
    if spec is None:
        spec = tuple(cls.COLUMNS.items())
        _SPECS[cls] = spec
    return spec


_TABLE_COLUMNS: dict[tuple[str, bool], tuple[Column, ...]] = {}


def table_columns(table: str, external_ids: bool = True) -> tuple[Column, ...]:
    """Every column the engine compares for a table (with external_ids if it has them)."""
    cols = _TABLE_COLUMNS.get((table, external_ids))
    if cols is None:
        cols = tuple(c for _, c in row_spec(ROW_TYPE_BY_TABLE[table]))
        if external_ids:
            cols += (EXTERNAL_IDS,)
        _TABLE_COLUMNS[(table, external_ids)] = cols
    return cols


@dataclass(frozen=True)
class _ClassInfo:
    spec: tuple[tuple[str, str, Kind, str | None], ...]   # field, column, kind, ref table
    kinds: dict[str, Kind | None]
    parents: tuple[Parent, ...]
    declared: frozenset[tuple[str, str]]


_INFO: dict[type[Row], _ClassInfo] = {}


def _info(cls: type[Row]) -> _ClassInfo:
    i = _INFO.get(cls)
    if i is None:
        i = _INFO[cls] = _ClassInfo(
            tuple((f, c.name, c.kind, c.ref_table) for f, c in row_spec(cls)),
            column_kinds(cls), cls.PARENTS,
            frozenset((p.table, p.column) for p in cls.PARENTS))
    return i


def _rank(k: tuple[str, str]) -> int:
    return TABLE_RANK[k[0]]


_KINDS: dict[type[Row], dict[str, Kind | None]] = {}


def column_kinds(cls: type[Row]) -> dict[str, Kind | None]:
    """column name -> kind; external_ids maps to None (never skipped as default)."""
    d = _KINDS.get(cls)
    if d is None:
        d = {c.name: c.kind for _, c in row_spec(cls)}
        d["external_ids"] = None
        _KINDS[cls] = d
    return d


_COLUMN_BY_NAME: dict[type[Row], dict[str, Column]] = {}


def column_by_name(cls: type[Row]) -> dict[str, Column]:
    d = _COLUMN_BY_NAME.get(cls)
    if d is None:
        d = {c.name: c for _, c in row_spec(cls)}
        d["external_ids"] = EXTERNAL_IDS
        _COLUMN_BY_NAME[cls] = d
    return d


def ownership_ids(owner: Owner, key: str) -> dict[str, str]:
    return {OWNER_TYPE_KEY: owner.type, OWNER_KEY: owner.name, ID_KEY: key}


# --- plans ------------------------------------------------------------------

@dataclass
class Insert:
    row: Row
    ref: Pending
    values: dict[str, Any]      # column -> canonical value (refs may be Pending)
    encoded: dict[str, Any]     # column -> executor value, for columns without Pending refs
    links: list[Link]


@dataclass
class Update:
    row: Row
    uuid: UUID
    changes: dict[str, tuple[Any, Any]]   # column or parent field -> (old, new)
    values: dict[str, Any]                # changed columns only
    encoded: dict[str, Any]
    add_links: list[Link]
    remove_links: list[tuple[str, str, UUID]]


@dataclass
class Delete:
    table: str
    key: str
    uuid: UUID
    parents: list[tuple[str, str, UUID]]
    name: str | None = None


@dataclass(slots=True)
class OwnerPlan:
    owner: Owner
    inserts: list[Insert] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    #: tables without external_ids: (table, name) registered to / released by the owner
    register: list[tuple[str, str]] = field(default_factory=list)
    unregister: list[tuple[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.inserts or self.updates or self.deletes or self.register
                    or self.unregister)

    def describe_rows(self) -> list[str]:
        out = [f"insert {i.row.TABLE} {i.row.key!r}" for i in self.inserts]
        out += [f"update {u.row.TABLE} {u.row.key!r} ({', '.join(sorted(u.changes))})"
                for u in self.updates]
        out += [f"delete {d.table} {d.key!r}" for d in self.deletes]
        return out


# --- the planner ------------------------------------------------------------

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

    # Everything below works on a scratch state and is merged into the
    # planner only when the whole owner plan succeeded.

    def plan(self, owner: Owner, rows: Sequence[Row],
             memo: Mapping[tuple[str, str], UUID] | None = None) -> OwnerPlan:
        """Plan one owner. `memo`: UUIDs given to its new rows by an earlier
        attempt of the same change (reused, see Pending)."""
        view = self.view
        plan = OwnerPlan(owner)
        desired: dict[tuple[str, str], Row] = {}
        for r in rows:
            if not isinstance(r, Row) or not r.TABLE:
                raise TypeError(f"{owner}: not a northd_sync row: {r!r}")
            k = (r.TABLE, r.key)
            if k in desired and desired[k] != r:
                raise InvalidRowError(owner, r.TABLE, r.key, "key", r.key,
                                      "two different rows of this owner have the same key")
            desired[k] = r

        deleted = self.deleted
        local_deleted: set[UUID] = set()
        keep: dict[tuple[str, str], UUID] = {}
        for k, uuids in view.owned(owner).items():
            live = [u for u in uuids if u not in deleted]
            if not live:
                continue
            if k in desired:
                if len(live) > 1:
                    live = sorted(live, key=str)
                keep[k] = live[0]
                extra = live[1:]          # duplicates: keep one
            else:
                extra = live
            for u in extra:
                plan.deletes.append(Delete(k[0], k[1], u, list(view.parents(k[0], u)),
                                           view.name_of(k[0], u)))
                local_deleted.add(u)
        all_deleted = deleted | local_deleted if local_deleted else deleted
        local_pending: dict[tuple[str, str], Pending] = {}
        new_links: list[tuple[UUID, str]] = []

        order = desired if len(desired) < 2 else sorted(desired, key=_rank)
        for k in order:
            r = desired[k]
            info = _info(type(r))
            table = r.TABLE
            has_ext = view.has_external_ids(table)
            values: dict[str, Any] = {}
            for fname, cname, kind, ref_table in info.spec:
                v = getattr(r, fname)
                if kind is Kind.STR_SET:
                    v = frozenset(v)
                elif kind is Kind.MAP:
                    v = _as_dict(v)
                elif kind is Kind.REF_SET:
                    v = frozenset(self._resolve(owner, r, fname, ref_table, n, local_pending,
                                                all_deleted) for n in v)
                elif kind is Kind.BANDS:
                    v = canonical(kind, v)
                values[cname] = v
            if has_ext:
                ext = dict(_as_dict(r.external_ids))
                ext[OWNER_TYPE_KEY] = owner.type
                ext[OWNER_KEY] = owner.name
                ext[ID_KEY] = r.key
                values["external_ids"] = ext
            links: list[Link] = []
            for p in info.parents:
                for pname in _parent_names(r, p):
                    links.append((p.table, p.column,
                                  self._resolve(owner, r, p.field, p.table, pname,
                                                local_pending, all_deleted)))
            cur_uuid = keep.get(k)
            if cur_uuid is None:
                name = r.row_name
                if name is not None:
                    self._check_name(owner, r, name, None, local_pending, all_deleted)
                uuid = memo.get(k) if memo else None
                if uuid is None:
                    uuid = uuidlib.uuid4()
                ref = Pending(table, r.key, name, owner, uuid)
                if name is not None:
                    local_pending[(table, name)] = ref
                # Columns left at their default need not be sent (nor checked).
                kinds = info.kinds
                encoded = self._encode(owner, r, {
                    c: v for c, v in values.items()
                    if (kc := kinds[c]) is None or v != DEFAULTS[kc]})
                plan.inserts.append(Insert(r, ref, values, encoded, links))
                if not has_ext:
                    plan.register.append((table, r.key))
                new_links += [(lk[2], lk[0]) for lk in links if isinstance(lk[2], UUID)]
                continue
            cols = table_columns(table, has_ext)
            current = view.values(table, cur_uuid, cols)
            changes: dict[str, tuple[Any, Any]] = {}
            changed_values: dict[str, Any] = {}
            for cname, new in values.items():
                old = current.get(cname)
                if old != new:
                    changes[cname] = (old, new)
                    changed_values[cname] = new
            if "name" in changed_values:
                self._check_name(owner, r, changed_values["name"], cur_uuid, local_pending,
                                 all_deleted)
            add_links: list[Link] = []
            remove_links: list[tuple[str, str, UUID]] = []
            if info.parents:
                declared = info.declared
                have = {lk for lk in view.parents(table, cur_uuid)
                        if (lk[0], lk[1]) in declared and lk[2] not in all_deleted}
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
                    new_links += [(lk[2], lk[0]) for lk in add_links
                                  if isinstance(lk[2], UUID)]
            if changes:
                encoded = self._encode(owner, r, changed_values)
                plan.updates.append(Update(r, cur_uuid, changes, changed_values, encoded,
                                           add_links, remove_links))

        if self._registry_tables:
            self._plan_registry(owner, desired, plan)

        # success: merge the scratch state
        if local_deleted:
            self.deleted |= local_deleted
            for u in local_deleted:
                self.deleted_by[u] = owner
        if local_pending:
            self.pending.update(local_pending)
        for u, ptable in new_links:
            self.linked.setdefault(u, []).append((owner, ptable))
        return plan

    def _resolve(self, owner: Owner, r: Row, fname: str, ref_table: str | None, name: str,
                 local_pending: dict[tuple[str, str], Pending], all_deleted: set[UUID]
                 ) -> Ref:
        assert ref_table is not None
        p = local_pending.get((ref_table, name)) or self.pending.get((ref_table, name))
        if p is not None:
            return p
        found = self.view.by_name(ref_table, name)
        if len(found) == 1 and found[0] not in all_deleted:
            return found[0]
        found = [u for u in found if u not in all_deleted]
        if len(found) == 1:
            return found[0]
        if not found:
            raise MissingReferenceError(owner, r.TABLE, r.key, fname, ref_table, name)
        raise AmbiguousReferenceError(owner, r.TABLE, r.key, fname, ref_table, name,
                                      len(found))

    def _check_name(self, owner: Owner, r: Row, name: str, self_uuid: UUID | None,
                    local_pending: dict[tuple[str, str], Pending], all_deleted: set[UUID]
                    ) -> None:
        p = local_pending.get((r.TABLE, name)) or self.pending.get((r.TABLE, name))
        if p is not None:
            raise ConflictError(owner, r.TABLE, r.key, name,
                                f"is being created by {p.owner} (key {p.key!r})")
        for u in self.view.by_name(r.TABLE, name):
            if u == self_uuid or u in all_deleted:
                continue
            o = self.view.ownership(r.TABLE, u)
            holder = (f"belongs to {o[0]}/{o[1]} (key {o[2]!r})" if o else
                      "is not managed by northd_sync (no k8s.ovn.org/owner external_ids)")
            raise ConflictError(owner, r.TABLE, r.key, name, holder)

    def _plan_registry(self, owner: Owner, desired: Mapping[tuple[str, str], Row],
                       plan: OwnerPlan) -> None:
        for table in self._registry_tables:
            for name in sorted(self.view.registered(table, owner)):
                if (table, name) not in desired:
                    plan.unregister.append((table, name))

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
                raise InvalidRowError(owner, r.TABLE, r.key, cname, _plain(v), str(e)) from None
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


_REGISTRY_TABLES = ("Load_Balancer_Group",)


def _parent_names(r: Row, p: Parent) -> tuple[str, ...]:
    v = getattr(r, p.field)
    if p.many:
        return tuple(v)
    return () if v is None else (v,)


def _plain(v: Any) -> Any:
    if isinstance(v, frozenset):
        return sorted(v, key=str)
    return v
