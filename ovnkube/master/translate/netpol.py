"""Pure translation of NetworkPolicies into OVN port groups, ACLs and address
sets, laid out and tiered as ovn-kubernetes does.

Per namespace with policies (owner `NetpolNamespace`), two default-deny port
groups holding the pods some policy of that direction selects:
- ingress: `to-lport` drop at 1000 on `outport == @pg`, ARP/ND allowed at 1001,
  hairpin (source 169.254.169.5, the service LBs' hairpin SNAT) allowed;
- egress: the same `from-lport` on `inport == @pg`, with `apply-after-lb` so a
  Service's backend is what the policy sees.
Per policy (owner `NetworkPolicy`), a port group of its selected pods and one
`allow-related` ACL at 1001 per rule, so replies to allowed connections pass.
Per distinct peer selector (owner `PodSelectorAddressSet`), one address set per
IP family of the pods it selects, shared by every policy that names it.

Named ports are resolved per destination pod: for ingress against the
policy's own pods, for egress against the peer pods; pods that give one name
different numbers each get their own clause. The node's management port is
allowed by an ACL on the node switch (see translate/node.py).

Names: port groups and address sets are `a<fnv64a hash>` of their ids (what
OVN accepts after `@`/`$`), the ids readable in external_ids
`k8s.ovn.org/name`; ACL names `NP:<ns>:<policy>:<Direction>:<rule>` (all built
in ovnkube/names.py).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from northd_sync.rows import ACL, AddressSet, PortGroup, Row
from ovnkube import names
from ovnkube.config import HAIRPIN_MASQUERADE_IP
from ovnkube.master.translate.netpol_model import (
    AclLogging,
    PeerSelector,
    PodFact,
    Policy,
    PortSpec,
    Rule,
)

NAMESPACE_OWNER = names.NETPOL_NAMESPACE_OWNER
POLICY_OWNER = names.NETWORK_POLICY_OWNER
ADDRESS_SET_OWNER = names.ADDRESS_SET_OWNER
NAME_KEY = "k8s.ovn.org/name"

DEFAULT_DENY_PRIORITY = 1000
DEFAULT_ALLOW_PRIORITY = 1001
AFTER_LB = {"apply-after-lb": "true"}
NO_LOGGING = AclLogging()


def _ip(family: int) -> str:
    return "ip4" if family == 4 else "ip6"


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def _sorted_ips(ips: Iterable[str]) -> list[str]:
    """Distinct addresses in numeric order (so equal inputs give equal rows)."""
    return sorted(set(ips), key=lambda a: ipaddress.ip_address(a).packed)


# --- address sets -----------------------------------------------------------

def address_set_rows(peer: PeerSelector, pods: Iterable[PodFact],
                     families: Sequence[int] = (4,)) -> list[Row]:
    """One address set per family with the IPs of the pods the peer selects."""
    ips = _sorted_ips(ip for p in pods for ip in p.ips)
    return [AddressSet(names.address_set_name(peer.id, f),
                       addresses=[ip for ip in ips if _family(ip) == f],
                       external_ids={NAME_KEY: peer.id, "ip-family": names.FAMILIES[f]})
            for f in families]


# --- per-namespace default deny -----------------------------------------------

def _logged(acl: ACL, severity: str | None) -> ACL:
    """The ACL with logging on at `severity` (rate-limited by the shared meter)."""
    if severity is None:
        return acl
    return replace(acl, log=True, severity=severity, meter=names.ACL_LOGGING_METER)


def _or(alts: Sequence[str]) -> str:
    if len(alts) == 1:
        return alts[0]
    return " || ".join(f"({a})" if " && " in a or " || " in a else a for a in alts)


def namespace_rows(namespace: str, ingress_pods: Iterable[PodFact],
                   egress_pods: Iterable[PodFact], logging: AclLogging = NO_LOGGING,
                   families: Sequence[int] = (4,)) -> list[Row]:
    """The namespace's default-deny port groups and their ACLs."""
    rows: list[Row] = []
    hairpin = HAIRPIN_MASQUERADE_IP
    for direction, pods in (("Ingress", ingress_pods), ("Egress", egress_pods)):
        pg = names.deny_pg_name(namespace, direction)
        ext = {NAME_KEY: f"{namespace}_{direction}DefaultDeny", "direction": direction}
        rows.append(PortGroup(pg, ports=sorted({p.port_name for p in pods}), external_ids=ext))
        if direction == "Ingress":
            acl_dir, port, opts = "to-lport", f"outport == @{pg}", {}
        else:
            acl_dir, port, opts = "from-lport", f"inport == @{pg}", AFTER_LB
        acl_ext = {"direction": direction, "policy-type": "defaultDeny"}
        rows.append(_logged(ACL(acl_dir, DEFAULT_DENY_PRIORITY, port, "drop", port_group=pg,
                                options=opts, name=names.acl_name(namespace, direction),
                                key=f"{direction}:defaultDeny", external_ids=acl_ext),
                            logging.deny))
        rows.append(ACL(acl_dir, DEFAULT_ALLOW_PRIORITY, f"{port} && (arp || nd)", "allow",
                        port_group=pg, options=opts,
                        name=names.acl_name(namespace, "ARPallowPolicy"),
                        key=f"{direction}:arpAllow",
                        external_ids={**acl_ext, "policy-type": "arpAllow"}))
        if 4 in families:
            rows.append(ACL(acl_dir, DEFAULT_ALLOW_PRIORITY, f"{port} && ip4.src == {hairpin}",
                            "allow-related", port_group=pg, options=opts,
                            name=names.acl_name(namespace, "allowHairpinning"),
                            key=f"{direction}:hairpinAllow",
                            external_ids={**acl_ext, "policy-type": "hairpinAllow"}))
    return rows


# --- one policy -----------------------------------------------------------------

def _set_match(field: str, items: Sequence[str], op: str = "==") -> str:
    return f"{field} {op} {items[0]}" if len(items) == 1 else \
        f"{field} {op} {{{', '.join(items)}}}"


def _l3_match(rule: Rule, side: str, families: Sequence[int]) -> str | None:
    """Who the rule admits, as an OVN expression; None: anyone."""
    if rule.any_peer:
        return None
    alts: list[str] = []
    for f in families:
        sets = sorted(f"${names.address_set_name(s.id, f)}" for s in rule.selectors)
        if sets:
            alts.append(_set_match(f"{_ip(f)}.{side}", sets))
    for b in rule.ip_blocks:
        field = f"{_ip(b.cidr.version)}.{side}"
        m = f"{field} == {b.cidr}"
        if b.excepts:
            m += f" && {_set_match(field, [str(e) for e in b.excepts], '!=')}"
        alts.append(m)
    if not alts:
        return "0"  # selectors of a family the cluster does not have
    return _or(alts)


def _l4(proto: str, port: PortSpec, number: int | None) -> str:
    p = proto.lower()
    if number is None:
        return p
    if port.end_port is not None and port.end_port != number:
        return f"{p} && {number} <= {p}.dst <= {port.end_port}"
    return f"{p} && {p}.dst == {number}"


def _l4_match(rule: Rule, dest_pods: Iterable[PodFact]) -> str | None:
    """Which ports the rule opens; None: all of them; "" : none (only named
    ports that no destination pod has)."""
    if not rule.ports:
        return None
    alts: list[str] = []
    dests = list(dest_pods)
    for spec in rule.ports:
        if not isinstance(spec.port, str):
            alts.append(_l4(spec.protocol, spec, spec.port))
            continue
        by_number: dict[int, list[str]] = defaultdict(list)
        for pod in dests:
            n = pod.named_port(spec.port, spec.protocol)
            if n is not None:
                by_number[n].extend(pod.ips)
        for n in sorted(by_number):
            ips = _sorted_ips(by_number[n])
            for f in sorted({_family(i) for i in ips}):
                fam = [i for i in ips if _family(i) == f]
                alts.append(f"{_set_match(f'{_ip(f)}.dst', fam)} && {_l4(spec.protocol, spec, n)}")
    return _or(list(dict.fromkeys(alts))) if alts else ""


def _and(*parts: str | None) -> str:
    present = [p for p in parts if p]
    return " && ".join(f"({p})" if "||" in p else p for p in present)


def policy_rows(policy: Policy, selected: Iterable[PodFact],
                egress_dests: Mapping[int, Iterable[PodFact]] | None = None,
                logging: AclLogging = NO_LOGGING, families: Sequence[int] = (4,)) -> list[Row]:
    """The policy's port group (its pods with a port) and one ACL per rule.

    `egress_dests`: per egress rule index, the pods its peers select; only
    read for rules with named ports (they are resolved on the destination).
    """
    pods = list(selected)
    pg = names.policy_pg_name(policy.namespace, policy.name)
    rows: list[Row] = [PortGroup(pg, ports=sorted({p.port_name for p in pods}),
                                 external_ids={NAME_KEY: policy.key})]
    gresses: list[tuple[str, Sequence[Rule]]] = []
    if policy.ingress:
        gresses.append(("Ingress", policy.ingress_rules))
    if policy.egress:
        gresses.append(("Egress", policy.egress_rules))
    for direction, rules in gresses:
        for i, rule in enumerate(rules):
            if direction == "Ingress":
                dests: Iterable[PodFact] = pods
                l3 = _l3_match(rule, "src", families)
                acl_dir, port, opts = "to-lport", f"outport == @{pg}", {}
            else:
                dests = (egress_dests or {}).get(i, ())
                l3 = _l3_match(rule, "dst", families)
                acl_dir, port, opts = "from-lport", f"inport == @{pg}", AFTER_LB
            l4 = _l4_match(rule, dests)
            if l4 == "" or l3 == "0":
                continue  # the rule admits nothing
            name = names.acl_name(policy.namespace, policy.name, direction, str(i))
            rows.append(_logged(ACL(
                acl_dir, DEFAULT_ALLOW_PRIORITY, _and(port, l3, l4), "allow-related",
                port_group=pg, options=opts, name=name, key=f"{direction}:{i}",
                external_ids={NAME_KEY: policy.key, "direction": direction,
                              "gress-index": str(i)}), logging.allow))
    return rows
