"""The base of northd_sync's rows: Row, its column kinds, owners, FrozenMap.

`northd_sync.rows` declares one Row subclass per NB table on top of these
(and re-exports them); see its docstring for identity and references.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

OWNER_TYPE_KEY = "k8s.ovn.org/owner-type"
OWNER_KEY = "k8s.ovn.org/owner"
ID_KEY = "k8s.ovn.org/id"
OWNERSHIP_KEYS = frozenset({OWNER_TYPE_KEY, OWNER_KEY, ID_KEY})


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable str -> str mapping; equal to a dict with the same items."""

    __slots__ = ("_d", "_h")

    def __init__(self, data: Mapping[str, str] | Iterable[tuple[str, str]] | None = None
                 ) -> None:
        self._d: dict[str, str] = dict(data) if data is not None else {}
        self._h: int | None = None

    def __getitem__(self, k: str) -> str:
        return self._d[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._d == other._d
        if isinstance(other, Mapping):
            return self._d == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"

    def to_dict(self) -> dict[str, str]:
        return dict(self._d)


@dataclass(frozen=True)
class Owner:
    """Who declared a set of rows: e.g. Owner("pod", "default/web-0")."""

    type: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise ValueError(f"Owner.type must be a non-empty string, got {self.type!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Owner.name must be a non-empty string, got {self.name!r}")

    def __str__(self) -> str:
        return f"{self.type}/{self.name}"


class Kind(enum.Enum):
    """How a Python value maps onto an OVSDB column."""

    STR = "str"            # exactly one string
    INT = "int"            # exactly one integer
    BOOL = "bool"          # exactly one boolean
    OPT_STR = "opt_str"    # zero or one string (None = empty)
    OPT_INT = "opt_int"
    OPT_BOOL = "opt_bool"
    STR_SET = "str_set"    # set of strings (order does not matter)
    MAP = "map"            # string -> string map
    REF_SET = "ref_set"    # set of references to rows of `ref_table`, by name
    BANDS = "bands"        # Meter.bands: set of Meter_Band rows, by value


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    ref_table: str | None = None


@dataclass(frozen=True)
class Parent:
    """A child's declaration of the row(s) that reference it.

    `field` is the dataclass field holding the parent's name (or names when
    `many`); the parent row is found by name in `table`, and the child is kept
    in the parent's `column` with mutate-style insert/delete.
    """

    field: str
    table: str
    column: str
    many: bool = False


def _str_tuple(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{what}: expected a sequence of strings, got {value!r}") from None
    return items


def _frozen_map(value: Any, what: str) -> FrozenMap:
    if value is None:
        return FrozenMap()
    if isinstance(value, FrozenMap):
        return value
    if isinstance(value, Mapping):
        return FrozenMap(value)
    try:
        return FrozenMap(dict(value))
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a mapping, got {value!r}") from None


@dataclass(frozen=True)
class MeterBand:
    rate: int
    burst_size: int = 0
    action: str = "drop"


@dataclass(frozen=True)
class Row:
    """Base of all desired rows. Subclasses set TABLE, COLUMNS and PARENTS."""

    TABLE: ClassVar[str] = ""
    #: dataclass field name -> OVSDB column (external_ids is handled apart)
    COLUMNS: ClassVar[Mapping[str, Column]] = {}
    PARENTS: ClassVar[tuple[Parent, ...]] = ()
    #: the row has a `name` column used for references and kept unique
    NAMED: ClassVar[bool] = True

    key: str = field(default="", kw_only=True)
    external_ids: Mapping[str, str] = field(default_factory=FrozenMap, kw_only=True)

    def __post_init__(self) -> None:
        cls = type(self)
        what = cls.__name__
        for f in fields(self):
            v = getattr(self, f.name)
            col = cls.COLUMNS.get(f.name)
            parent = next((p for p in cls.PARENTS if p.field == f.name), None)
            if f.name == "external_ids":
                nv: Any = _frozen_map(v, f"{what}.external_ids")
                bad = OWNERSHIP_KEYS & set(nv)
                if bad:
                    raise ValueError(f"{what}.external_ids must not set {sorted(bad)}: "
                                     "the engine writes the ownership keys itself")
            elif col is not None and col.kind in (Kind.STR_SET, Kind.REF_SET):
                nv = _str_tuple(v, f"{what}.{f.name}")
            elif col is not None and col.kind is Kind.MAP:
                nv = _frozen_map(v, f"{what}.{f.name}")
            elif col is not None and col.kind is Kind.BANDS:
                nv = tuple(v)
            elif parent is not None and parent.many:
                nv = _str_tuple(v, f"{what}.{f.name}")
            else:
                continue
            object.__setattr__(self, f.name, nv)
        self._check()
        if not self.key:
            object.__setattr__(self, "key", self.default_key())

    def _check(self) -> None:
        """Subclass hook for cross-field validation."""

    def default_key(self) -> str:
        return str(getattr(self, "name"))  # noqa: B009 - NAMED subclasses define it

    @property
    def row_name(self) -> str | None:
        """The row's name (what other rows reference), if the table has one."""
        return str(getattr(self, "name")) if self.NAMED else None  # noqa: B009

    def describe(self) -> str:
        return f"{self.TABLE} {self.key!r}"


def column(name: str, kind: Kind, ref_table: str | None = None) -> Column:
    return Column(name, kind, ref_table)
