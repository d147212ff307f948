"""NetworkPolicy, pods and namespaces as plain facts, pure.

`Policy.parse` reads a networking.k8s.io/v1 NetworkPolicy (as the API returns
it, a dict) into frozen values and refuses what the API would refuse, naming
the bad field. `PodFact.of` and `NamespaceFact.of` keep only what policy
translation reads of a pod or namespace, so a controller can tell whether an
event changed anything that matters.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ovnkube import names
from ovnkube.master.translate.selectors import Selector, SelectorError

Obj = dict[str, Any]
PROTOCOLS = ("TCP", "UDP", "SCTP")
SEVERITIES = ("alert", "warning", "notice", "info", "debug")
ACL_LOGGING_ANNOTATION = "k8s.ovn.org/acl-logging"


class PolicyError(ValueError):
    """A NetworkPolicy (or annotation) the translation cannot honour."""


@dataclass(frozen=True)
class PeerSelector:
    """The pods a selector peer means: `namespace` set when the peer has no
    namespaceSelector (pods of the policy's own namespace)."""

    pod_selector: Selector
    namespace: str | None = None
    ns_selector: Selector | None = None

    @property
    def id(self) -> str:
        scope = f"ns={self.namespace}" if self.namespace is not None else \
            f"nsSel={self.ns_selector.key if self.ns_selector else ''}"
        return f"{scope}|podSel={self.pod_selector.key}"

    def selects(self, pod: PodFact, ns_labels: Mapping[str, str] | None) -> bool:
        if self.namespace is not None:
            if pod.namespace != self.namespace:
                return False
        elif self.ns_selector is not None and not self.ns_selector.matches(ns_labels):
            return False
        return self.pod_selector.matches(pod.labels)

    def selects_namespace(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        if self.namespace is not None:
            return namespace == self.namespace
        return self.ns_selector is None or self.ns_selector.matches(labels)


@dataclass(frozen=True)
class IPBlock:
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@dataclass(frozen=True)
class PortSpec:
    protocol: str
    port: int | str | None = None  # a number, a container port name, or any port
    end_port: int | None = None


@dataclass(frozen=True)
class Rule:
    selectors: tuple[PeerSelector, ...] = ()
    ip_blocks: tuple[IPBlock, ...] = ()
    ports: tuple[PortSpec, ...] = ()

    @property
    def any_peer(self) -> bool:
        """A rule without peers admits every address."""
        return not self.selectors and not self.ip_blocks


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    ingress: bool
    egress: bool
    ingress_rules: tuple[Rule, ...] = ()
    egress_rules: tuple[Rule, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @functools.cached_property
    def named_port_egress(self) -> tuple[int, ...]:
        """Indexes of egress rules whose ports name container ports (resolved
        on the destination pods, so those rules follow the peers' pods)."""
        if not self.egress:
            return ()
        return tuple(i for i, r in enumerate(self.egress_rules)
                     if any(isinstance(p.port, str) for p in r.ports))

    @functools.cached_property
    def named_port_egress_anywhere(self) -> bool:
        """An egress rule with named ports and no peers: every pod is a destination."""
        return any(self.egress_rules[i].any_peer for i in self.named_port_egress)

    def peers(self) -> set[PeerSelector]:
        rules = (self.ingress_rules if self.ingress else ()) + \
            (self.egress_rules if self.egress else ())
        return {s for r in rules for s in r.selectors}

    @classmethod
    def parse(cls, obj: Obj) -> Policy:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        ns, name = meta.get("namespace"), meta.get("name")
        if not ns or not name:
            raise PolicyError(f"NetworkPolicy without namespace/name: {meta!r}")
        what = f"NetworkPolicy {ns}/{name}"
        try:
            pod_sel = Selector.parse(spec.get("podSelector") or {}, f"{what}: spec.podSelector")
            ingress = [_rule(r, ns, f"{what}: spec.ingress[{i}]", "from")
                       for i, r in enumerate(spec.get("ingress") or [])]
            egress = [_rule(r, ns, f"{what}: spec.egress[{i}]", "to")
                      for i, r in enumerate(spec.get("egress") or [])]
        except SelectorError as e:
            raise PolicyError(str(e)) from None
        types = spec.get("policyTypes")
        if types:
            bad = [t for t in types if t not in ("Ingress", "Egress")]
            if bad:
                raise PolicyError(f"{what}: spec.policyTypes: {bad[0]!r} is not Ingress or Egress")
            has_in, has_eg = "Ingress" in types, "Egress" in types
        else:  # implied, as the API defaults it
            has_in, has_eg = True, bool(egress)
        return cls(ns, name, pod_sel, has_in, has_eg, tuple(ingress), tuple(egress))


def _rule(raw: Any, ns: str, what: str, peers_field: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{what}: expected an object, got {raw!r}")
    selectors: list[PeerSelector] = []
    blocks: list[IPBlock] = []
    for i, p in enumerate(raw.get(peers_field) or []):
        pw = f"{what}.{peers_field}[{i}]"
        if not isinstance(p, Mapping):
            raise PolicyError(f"{pw}: expected an object, got {p!r}")
        if "ipBlock" in p and p["ipBlock"] is not None:
            if p.get("podSelector") is not None or p.get("namespaceSelector") is not None:
                raise PolicyError(f"{pw}: ipBlock cannot be combined with selectors")
            blocks.append(_ip_block(p["ipBlock"], f"{pw}.ipBlock"))
            continue
        pod_raw, ns_raw = p.get("podSelector"), p.get("namespaceSelector")
        if pod_raw is None and ns_raw is None:
            raise PolicyError(f"{pw}: a peer needs podSelector, namespaceSelector or ipBlock")
        pod_sel = Selector.parse(pod_raw or {}, f"{pw}.podSelector")
        if ns_raw is None:
            selectors.append(PeerSelector(pod_sel, namespace=ns))
        else:
            selectors.append(PeerSelector(pod_sel, ns_selector=Selector.parse(
                ns_raw, f"{pw}.namespaceSelector")))
    ports = tuple(_port(p, f"{what}.ports[{i}]") for i, p in enumerate(raw.get("ports") or []))
    return Rule(tuple(dict.fromkeys(selectors)), tuple(blocks), ports)


def _ip_block(raw: Any, what: str) -> IPBlock:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("cidr"), str):
        raise PolicyError(f"{what}: expected {{cidr: ..., except: [...]}}, got {raw!r}")
    try:
        cidr = ipaddress.ip_network(raw["cidr"], strict=False)
        excepts = tuple(ipaddress.ip_network(e, strict=False) for e in raw.get("except") or [])
    except (ValueError, TypeError) as e:
        raise PolicyError(f"{what}: {e}") from None
    for ex in excepts:
        if ex.version != cidr.version or not ex.subnet_of(cidr):  # type: ignore[arg-type]
            raise PolicyError(f"{what}.except: {ex} is not inside {cidr}")
    return IPBlock(cidr, excepts)


def _port(raw: Any, what: str) -> PortSpec:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{what}: expected an object, got {raw!r}")
    proto = raw.get("protocol") or "TCP"
    if proto not in PROTOCOLS:
        raise PolicyError(f"{what}.protocol: {proto!r} is not one of {', '.join(PROTOCOLS)}")
    port, end = raw.get("port"), raw.get("endPort")
    if isinstance(port, bool) or not isinstance(port, int | str | None):
        raise PolicyError(f"{what}.port: expected a number or a name, got {port!r}")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise PolicyError(f"{what}.port: {port} is not in 1-65535")
    if end is not None:
        if not isinstance(port, int) or isinstance(end, bool) or not isinstance(end, int):
            raise PolicyError(f"{what}.endPort: {end!r} needs a numeric port and a number")
        if not port <= end <= 65535:
            raise PolicyError(f"{what}.endPort: {end} is not in {port}-65535")
    return PortSpec(proto, port, end)


@dataclass(frozen=True)
class PodFact:
    """What policy translation reads of a pod on the pod network."""

    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ips: tuple[str, ...] = ()
    #: (port name, protocol) -> container port number
    named_ports: tuple[tuple[str, str, int], ...] = ()

    def __hash__(self) -> int:
        return hash((self.namespace, self.name, self.ips))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def port_name(self) -> str:
        return names.pod_port(self.namespace, self.name)

    def named_port(self, name: str, protocol: str) -> int | None:
        return next((n for pn, pr, n in self.named_ports if pn == name and pr == protocol), None)

    @classmethod
    def of(cls, pod: Obj, ips: tuple[str, ...]) -> PodFact:
        meta = pod["metadata"]
        ports = sorted({(p["name"], p.get("protocol") or "TCP", int(p["containerPort"]))
                        for c in pod.get("spec", {}).get("containers") or []
                        for p in c.get("ports") or []
                        if p.get("name") and p.get("containerPort")})
        return cls(meta["namespace"], meta["name"], dict(meta.get("labels") or {}), ips,
                   tuple(ports))


@dataclass(frozen=True)
class AclLogging:
    """`k8s.ovn.org/acl-logging`: severities for denied and allowed traffic."""

    deny: str | None = None
    allow: str | None = None

    @classmethod
    def parse(cls, raw: str | None) -> AclLogging:
        if raw is None or not raw.strip():
            return cls()
        try:
            data = json.loads(raw)
        except ValueError:
            raise PolicyError(f"{ACL_LOGGING_ANNOTATION}: {raw!r} is not JSON") from None
        if not isinstance(data, dict):
            raise PolicyError(f"{ACL_LOGGING_ANNOTATION}: {raw!r} is not a JSON object")
        out: dict[str, str | None] = {}
        for k in ("deny", "allow"):
            v = data.get(k)
            if v is not None and v not in SEVERITIES:
                raise PolicyError(f"{ACL_LOGGING_ANNOTATION}: {k}={v!r} is not one of "
                                  f"{', '.join(SEVERITIES)}")
            out[k] = v
        unknown = sorted(set(data) - {"deny", "allow"})
        if unknown:
            raise PolicyError(f"{ACL_LOGGING_ANNOTATION}: unknown key {unknown[0]!r} "
                              "(expected deny, allow)")
        return cls(out["deny"], out["allow"])


@dataclass(frozen=True)
class NamespaceFact:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.name)
