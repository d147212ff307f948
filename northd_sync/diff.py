"""The diff: desired rows of an owner versus what the database holds -> a plan.

Pure code. It reads the database through the small `View` protocol, which the
engine implements on top of the python-ovs IDL cache (`cache.IdlView`) and
the tests implement on plain dicts (`memory.MemoryView`). Nothing here does I/O
or knows about python-ovs.

This module holds what a plan is made of (inserts, updates, deletes, pending
rows), the canonical form values are compared in, and the per-class column
tables; `northd_sync.planner` builds the plans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

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

def as_dict(m: Mapping[str, str]) -> dict[str, str]:
    if isinstance(m, FrozenMap):
        return m._d  # read-only use: compared, never mutated
    return dict(m)


def canonical(kind: Kind, value: Any) -> Any:
    """The form values are compared in: sets for sets, dicts for maps."""
    if kind is Kind.STR_SET:
        return frozenset(value)
    if kind is Kind.MAP:
        return as_dict(value)
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
class ClassInfo:
    spec: tuple[tuple[str, str, Kind, str | None], ...]   # field, column, kind, ref table
    kinds: dict[str, Kind | None]
    parents: tuple[Parent, ...]
    declared: frozenset[tuple[str, str]]


_INFO: dict[type[Row], ClassInfo] = {}


def class_info(cls: type[Row]) -> ClassInfo:
    i = _INFO.get(cls)
    if i is None:
        i = _INFO[cls] = ClassInfo(
            tuple((f, c.name, c.kind, c.ref_table) for f, c in row_spec(cls)),
            column_kinds(cls), cls.PARENTS,
            frozenset((p.table, p.column) for p in cls.PARENTS))
    return i


def table_rank(k: tuple[str, str]) -> int:
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


def plain(v: Any) -> Any:
    """A canonical value as reports show it (sets as sorted lists)."""
    if isinstance(v, frozenset):
        return sorted(v, key=str)
    return v
