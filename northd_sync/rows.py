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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from northd_sync.rowbase import (
    ID_KEY,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    OWNERSHIP_KEYS,
    Column,
    FrozenMap,
    Kind,
    MeterBand,
    Owner,
    Parent,
    Row,
    column,
)

__all__ = [
    "ACL", "ID_KEY", "NAT", "OWNERSHIP_KEYS", "OWNER_KEY", "OWNER_TYPE_KEY", "ROW_TYPES",
    "ROW_TYPE_BY_TABLE", "TABLE_ORDER", "TABLE_RANK", "AddressSet", "Column", "FrozenMap",
    "GatewayChassis", "Kind", "LoadBalancer", "LoadBalancerGroup", "LogicalRouter",
    "LogicalRouterPolicy", "LogicalRouterPort", "LogicalRouterStaticRoute", "LogicalSwitch",
    "LogicalSwitchPort", "Meter", "MeterBand", "Owner", "Parent", "PortGroup", "Row",
]

_c = column


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
