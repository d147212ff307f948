"""Typed desired-state rows for the OVN Northbound tables northd_sync writes.

A row is a frozen dataclass: hashable, comparable, safe to keep in sets and to
compare between two translations of the same Kubernetes object. Constructors
accept the natural Python types (lists, dicts); they are normalised to tuples
and `FrozenMap`s so that equal desired states compare equal.

Identity: every row has a `key`, unique per (owner, table), stored in the row's
`external_ids` under `k8s.ovn.org/id`. It defaults to the row's name, or for
rows without a name (routes, NATs, ACLs) to a string made of the columns that
define the row. The engine adds `k8s.ovn.org/owner-type` and
`k8s.ovn.org/owner`; rows without these are never modified or deleted.

References are by name and are resolved by the engine. A child names its
parent (a port names its switch, a route its router, an ACL its port group);
the parent's desired state never lists its children, so that applying a
parent never drops children that other owners declared.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


def _c(name: str, kind: Kind, ref_table: str | None = None) -> Column:
    return Column(name, kind, ref_table)


@dataclass(frozen=True)
class LogicalSwitch(Row):
    TABLE: ClassVar[str] = "Logical_Switch"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "other_config": _c("other_config", Kind.MAP),
        "load_balancer_groups": _c("load_balancer_group", Kind.REF_SET, "Load_Balancer_Group"),
    }

    name: str
    other_config: Mapping[str, str] = field(default_factory=FrozenMap)
    load_balancer_groups: Sequence[str] = ()


@dataclass(frozen=True)
class LogicalSwitchPort(Row):
    TABLE: ClassVar[str] = "Logical_Switch_Port"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "type": _c("type", Kind.STR),
        "addresses": _c("addresses", Kind.STR_SET),
        "port_security": _c("port_security", Kind.STR_SET),
        "options": _c("options", Kind.MAP),
        "enabled": _c("enabled", Kind.OPT_BOOL),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (Parent("switch", "Logical_Switch", "ports"),)

    name: str
    switch: str
    type: str = ""
    addresses: Sequence[str] = ()
    port_security: Sequence[str] = ()
    options: Mapping[str, str] = field(default_factory=FrozenMap)
    enabled: bool | None = None


@dataclass(frozen=True)
class LogicalRouter(Row):
    TABLE: ClassVar[str] = "Logical_Router"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "options": _c("options", Kind.MAP),
        "enabled": _c("enabled", Kind.OPT_BOOL),
        "load_balancer_groups": _c("load_balancer_group", Kind.REF_SET, "Load_Balancer_Group"),
    }

    name: str
    options: Mapping[str, str] = field(default_factory=FrozenMap)
    enabled: bool | None = None
    load_balancer_groups: Sequence[str] = ()


@dataclass(frozen=True)
class LogicalRouterPort(Row):
    TABLE: ClassVar[str] = "Logical_Router_Port"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "mac": _c("mac", Kind.STR),
        "networks": _c("networks", Kind.STR_SET),
        "peer": _c("peer", Kind.OPT_STR),
        "options": _c("options", Kind.MAP),
        "enabled": _c("enabled", Kind.OPT_BOOL),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (Parent("router", "Logical_Router", "ports"),)

    name: str
    router: str
    mac: str
    networks: Sequence[str]
    peer: str | None = None
    options: Mapping[str, str] = field(default_factory=FrozenMap)
    enabled: bool | None = None

    def _check(self) -> None:
        if not self.networks:
            raise ValueError(f"LogicalRouterPort {self.name!r}: networks must not be empty")


@dataclass(frozen=True)
class LogicalRouterStaticRoute(Row):
    TABLE: ClassVar[str] = "Logical_Router_Static_Route"
    NAMED: ClassVar[bool] = False
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "ip_prefix": _c("ip_prefix", Kind.STR),
        "nexthop": _c("nexthop", Kind.STR),
        "output_port": _c("output_port", Kind.OPT_STR),
        "policy": _c("policy", Kind.OPT_STR),
        "route_table": _c("route_table", Kind.STR),
        "options": _c("options", Kind.MAP),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (
        Parent("router", "Logical_Router", "static_routes"),)

    router: str
    ip_prefix: str
    nexthop: str
    output_port: str | None = None
    policy: str | None = None
    route_table: str = ""
    options: Mapping[str, str] = field(default_factory=FrozenMap)

    def default_key(self) -> str:
        return (f"{self.router}|{self.policy or 'dst-ip'}|{self.ip_prefix}|{self.nexthop}"
                f"|{self.route_table}")


@dataclass(frozen=True)
class LogicalRouterPolicy(Row):
    """A routing policy: `action` (allow, drop, reroute to `nexthops`) for
    packets matching `match`, decided before the routing table."""

    TABLE: ClassVar[str] = "Logical_Router_Policy"
    NAMED: ClassVar[bool] = False
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "priority": _c("priority", Kind.INT),
        "match": _c("match", Kind.STR),
        "action": _c("action", Kind.STR),
        "nexthops": _c("nexthops", Kind.STR_SET),
        "options": _c("options", Kind.MAP),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (
        Parent("router", "Logical_Router", "policies"),)

    router: str
    priority: int
    match: str
    action: str
    nexthops: Sequence[str] = ()
    options: Mapping[str, str] = field(default_factory=FrozenMap)

    def _check(self) -> None:
        if self.action not in ("allow", "drop", "reroute"):
            raise ValueError(f"Logical_Router_Policy {self.match!r}: action {self.action!r} "
                             "is not allow, drop or reroute")
        if (self.action == "reroute") != bool(self.nexthops):
            raise ValueError(f"Logical_Router_Policy {self.match!r}: nexthops go with "
                             "action reroute, and only with it")

    def default_key(self) -> str:
        return f"{self.router}|{self.priority}|{self.match}"


@dataclass(frozen=True)
class NAT(Row):
    TABLE: ClassVar[str] = "NAT"
    NAMED: ClassVar[bool] = False
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "type": _c("type", Kind.STR),
        "external_ip": _c("external_ip", Kind.STR),
        "logical_ip": _c("logical_ip", Kind.STR),
        "logical_port": _c("logical_port", Kind.OPT_STR),
        "external_mac": _c("external_mac", Kind.OPT_STR),
        "external_port_range": _c("external_port_range", Kind.STR),
        "options": _c("options", Kind.MAP),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (Parent("router", "Logical_Router", "nat"),)

    router: str
    type: str
    external_ip: str
    logical_ip: str
    logical_port: str | None = None
    external_mac: str | None = None
    external_port_range: str = ""
    options: Mapping[str, str] = field(default_factory=FrozenMap)

    def default_key(self) -> str:
        return f"{self.router}|{self.type}|{self.external_ip}|{self.logical_ip}"


@dataclass(frozen=True)
class LoadBalancer(Row):
    """A load balancer; `groups`, `switches` and `routers` name the rows it is attached to."""

    TABLE: ClassVar[str] = "Load_Balancer"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "vips": _c("vips", Kind.MAP),
        "protocol": _c("protocol", Kind.OPT_STR),
        "options": _c("options", Kind.MAP),
        "selection_fields": _c("selection_fields", Kind.STR_SET),
        "ip_port_mappings": _c("ip_port_mappings", Kind.MAP),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (
        Parent("groups", "Load_Balancer_Group", "load_balancer", many=True),
        Parent("switches", "Logical_Switch", "load_balancer", many=True),
        Parent("routers", "Logical_Router", "load_balancer", many=True),
    )

    name: str
    vips: Mapping[str, str] = field(default_factory=FrozenMap)
    protocol: str | None = None
    options: Mapping[str, str] = field(default_factory=FrozenMap)
    selection_fields: Sequence[str] = ()
    ip_port_mappings: Mapping[str, str] = field(default_factory=FrozenMap)
    groups: Sequence[str] = ()
    switches: Sequence[str] = ()
    routers: Sequence[str] = ()


@dataclass(frozen=True)
class LoadBalancerGroup(Row):
    """A load balancer group. Its members are declared by LoadBalancer.groups.

    The NB schema has no external_ids on this table: the engine keeps the
    ownership tags in NB_Global.external_ids instead (key
    `k8s.ovn.org/owned/Load_Balancer_Group/<name>`), so the key must be the name.
    """

    TABLE: ClassVar[str] = "Load_Balancer_Group"
    COLUMNS: ClassVar[Mapping[str, Column]] = {"name": _c("name", Kind.STR)}

    name: str

    def _check(self) -> None:
        if self.key and self.key != self.name:
            raise ValueError(f"LoadBalancerGroup {self.name!r}: key must be the name")
        if self.external_ids:
            raise ValueError(f"LoadBalancerGroup {self.name!r}: the table has no external_ids")


@dataclass(frozen=True)
class ACL(Row):
    """An ACL on a port group (`port_group`) or on a switch (`switch`): exactly one."""

    TABLE: ClassVar[str] = "ACL"
    NAMED: ClassVar[bool] = False
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "direction": _c("direction", Kind.STR),
        "priority": _c("priority", Kind.INT),
        "match": _c("match", Kind.STR),
        "action": _c("action", Kind.STR),
        "log": _c("log", Kind.BOOL),
        "name": _c("name", Kind.OPT_STR),
        "severity": _c("severity", Kind.OPT_STR),
        "meter": _c("meter", Kind.OPT_STR),
        "label": _c("label", Kind.INT),
        "options": _c("options", Kind.MAP),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (
        Parent("port_group", "Port_Group", "acls"),
        Parent("switch", "Logical_Switch", "acls"),
    )

    direction: str
    priority: int
    match: str
    action: str
    port_group: str | None = None
    switch: str | None = None
    log: bool = False
    name: str | None = None
    severity: str | None = None
    meter: str | None = None
    label: int = 0
    options: Mapping[str, str] = field(default_factory=FrozenMap)

    def _check(self) -> None:
        if (self.port_group is None) == (self.switch is None):
            raise ValueError(f"ACL {self.match!r}: set exactly one of port_group and switch")

    def default_key(self) -> str:
        parent = f"pg:{self.port_group}" if self.port_group is not None else f"ls:{self.switch}"
        return f"{parent}|{self.direction}|{self.priority}|{self.match}"


@dataclass(frozen=True)
class PortGroup(Row):
    """A port group; `ports` are logical switch port names (resolved to rows)."""

    TABLE: ClassVar[str] = "Port_Group"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "ports": _c("ports", Kind.REF_SET, "Logical_Switch_Port"),
    }

    name: str
    ports: Sequence[str] = ()


@dataclass(frozen=True)
class AddressSet(Row):
    TABLE: ClassVar[str] = "Address_Set"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "addresses": _c("addresses", Kind.STR_SET),
    }

    name: str
    addresses: Sequence[str] = ()


@dataclass(frozen=True)
class GatewayChassis(Row):
    TABLE: ClassVar[str] = "Gateway_Chassis"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "chassis_name": _c("chassis_name", Kind.STR),
        "priority": _c("priority", Kind.INT),
        "options": _c("options", Kind.MAP),
    }
    PARENTS: ClassVar[tuple[Parent, ...]] = (
        Parent("router_port", "Logical_Router_Port", "gateway_chassis"),)

    name: str
    router_port: str
    chassis_name: str
    priority: int = 0
    options: Mapping[str, str] = field(default_factory=FrozenMap)


@dataclass(frozen=True)
class Meter(Row):
    TABLE: ClassVar[str] = "Meter"
    COLUMNS: ClassVar[Mapping[str, Column]] = {
        "name": _c("name", Kind.STR),
        "unit": _c("unit", Kind.STR),
        "bands": _c("bands", Kind.BANDS),
        "fair": _c("fair", Kind.OPT_BOOL),
    }

    name: str
    unit: str
    bands: Sequence[MeterBand]
    fair: bool | None = None

    def _check(self) -> None:
        if not self.bands:
            raise ValueError(f"Meter {self.name!r}: at least one band is required")
        for b in self.bands:
            if not isinstance(b, MeterBand):
                raise TypeError(f"Meter {self.name!r}: bands must be MeterBand, got {b!r}")


ROW_TYPES: tuple[type[Row], ...] = (
    LogicalSwitch, LogicalSwitchPort, LogicalRouter, LogicalRouterPort,
    LogicalRouterStaticRoute, LogicalRouterPolicy, NAT, LoadBalancer, LoadBalancerGroup, ACL,
    PortGroup, AddressSet, GatewayChassis, Meter,
)
ROW_TYPE_BY_TABLE: dict[str, type[Row]] = {t.TABLE: t for t in ROW_TYPES}

#: Order in which a plan handles tables, so that rows can reference rows
#: declared earlier in the same apply: parents before children.
TABLE_ORDER: tuple[str, ...] = (
    "Load_Balancer_Group", "Meter", "Address_Set", "Logical_Switch", "Logical_Router",
    "Logical_Switch_Port", "Logical_Router_Port", "Gateway_Chassis",
    "Logical_Router_Static_Route", "Logical_Router_Policy", "NAT", "Load_Balancer",
    "Port_Group", "ACL",
)
TABLE_RANK: dict[str, int] = {t: i for i, t in enumerate(TABLE_ORDER)}
