"""Pure translation of a Service and its EndpointSlices into OVN load balancers.

Named as ovn-kubernetes names them. Per protocol:
- `Service_<ns>/<name>_<PROTO>_cluster`: the ClusterIPs (and, with
  externalTrafficPolicy=Cluster, the externalIPs and LoadBalancer ingress IPs)
  to every ready endpoint; in `clusterLBGroup`, so on every node switch and
  gateway router.
- `Service_<ns>/<name>_<PROTO>_node_router_<node>`: the node's IPs (and the
  gateway router's masquerade IP, for the node's own host) on the NodePorts
  (and, with externalTrafficPolicy=Local, the external IPs) on that
  node's gateway router; with ETP=Local only the node's own endpoints, and no
  SNAT so the client address is kept.
- `Service_<ns>/<name>_<PROTO>_node_switch_<node>`: on the node switch, the
  node's own IPs on the NodePorts (pods reaching their own node's NodePort)
  and, with internalTrafficPolicy=Local, the ClusterIPs to the node's own
  endpoints (the cluster LB then leaves the ClusterIPs out).

A Service with a host-network endpoint (an address of a node) gets a
node_switch LB on every node for its ClusterIPs and external IPs, the
node's own such endpoint replaced by its management port address, and its
cluster LB goes on the gateway routers only: the node's address is the
gateway router's too. The node_router LBs (externalTrafficPolicy=Cluster)
and that cluster LB reach every host-network endpoint, on any node, by its
node's management port address: the router SNATs to its join address, and
the host answers through that port (node/agent.py routes the join subnet
there), so the reply comes back through OVN as a pod's does.

A VIP without endpoints stays, with `reject=true`, so clients get a reset
instead of a timeout. Headless and ExternalName services make nothing, nor
do Services labelled `service.kubernetes.io/headless` or
`service.kubernetes.io/service-proxy-name` (another proxy's), as kube-proxy
leaves them.

With externalTrafficPolicy=Local, pods reaching an external IP are internal
traffic: the node switch LB sends them to every endpoint (as ovn-kubernetes
and kube-proxy do), only traffic entering through a gateway router is kept
on the node's own endpoints. Endpoint choice is per node for the Local
policies: a node's ready endpoints, else its serving+terminating ones.

sessionAffinity=ClientIP sets `affinity_timeout`; the largest timeout
Kubernetes allows (86400 s) means "for ever" and is done by hashing on the
addresses (`selection_fields=ip_src,ip_dst`), as ovn-kubernetes does.

Both address families: a ClusterIP, external IP or node IP only gets
backends of its own family.

Two stages: `lb_config` reads the Service once (its policies, options, and
per port the endpoints, classified once); `lb_rows` lays that out as the
cluster and the per-node load balancers.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from northd_sync.rows import LoadBalancer, Row
from ovnkube import names
from ovnkube.config import GR_MASQUERADE_IP, HAIRPIN_MASQUERADE_IP

OWNER_TYPE = "Service"
Obj = dict[str, Any]
PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_AFFINITY_TIMEOUT = 10800
#: Kubernetes' largest sessionAffinityConfig timeout; ovn-kubernetes makes it permanent
MAX_AFFINITY_TIMEOUT = 86400


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str | None


def _vip(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


#: Labels that hand a Service to another proxy (or none), as kube-proxy reads them.
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_LABEL = "service.kubernetes.io/headless"


def wants_lbs(svc: Obj) -> bool:
    spec = svc.get("spec", {})
    if spec.get("type") == "ExternalName":
        return False
    labels = svc.get("metadata", {}).get("labels") or {}
    if PROXY_NAME_LABEL in labels or HEADLESS_LABEL in labels:
        return False
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    return bool(ips) and ips[0] != "None"


@dataclass(frozen=True)
class PortEndpoints:
    """One service port's endpoints, classified once."""
    ready: tuple[Endpoint, ...]
    fallback: tuple[Endpoint, ...]  # serving and terminating

    def use(self, node: str | None = None) -> list[Endpoint]:
        """Ready endpoints, or serving+terminating ones when none is ready. With
        `node`, only that node's, the fallback decided for that node alone."""
        ready, fallback = self.ready, self.fallback
        if node is not None:
            ready = tuple(e for e in ready if e.node == node)
            fallback = tuple(e for e in fallback if e.node == node)
        return list(ready or fallback)


def classify(port: Obj, slices: Iterable[Obj]) -> PortEndpoints:
    """The ready and serving+terminating endpoints of one service port. Named
    target ports are resolved per slice (the slice's port carries the service
    port's name and the resolved number)."""
    pname = port.get("name") or ""
    proto = port.get("protocol") or "TCP"
    ready: list[Endpoint] = []
    fallback: list[Endpoint] = []
    for sl in slices:
        if sl.get("addressType") not in ("IPv4", "IPv6"):
            continue
        number = next((p.get("port") for p in sl.get("ports") or []
                       if (p.get("name") or "") == pname and (p.get("protocol") or "TCP") == proto),
                      None)
        if number is None:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            is_ready = cond.get("ready") is not False
            serving = cond.get("serving", is_ready) is not False
            terminating = cond.get("terminating") is True
            for addr in ep.get("addresses") or []:
                e = Endpoint(addr, int(number), ep.get("nodeName"))
                # Ready as kube-proxy reads it: the EndpointSlice controller
                # marks a terminating endpoint ready only when its Service
                # publishes not-ready addresses, and then it must be used.
                if is_ready:
                    ready.append(e)
                elif serving and terminating:
                    fallback.append(e)
    return PortEndpoints(tuple(_unique(ready)), tuple(_unique(fallback)))


@functools.lru_cache(maxsize=1 << 16)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An endpoint's address, parsed once: a Service of 100 ports over slices
    of 1,000 endpoints asks for each millions of times (tests/test_hostile_limits.py)."""
    return ipaddress.ip_address(text)


def _unique(eps: Iterable[Endpoint]) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for e in eps:
        seen.setdefault((e.ip, e.port), e)
    return sorted(seen.values(), key=lambda e: (_ip(e.ip).packed, e.port))


def endpoints_for_port(port: Obj, slices: Iterable[Obj], node: str | None = None
                       ) -> list[Endpoint]:
    """Backends for one service port: ready endpoints, or serving+terminating
    ones when none is ready. With `node`, only that node's endpoints, the
    fallback decided for that node alone (externalTrafficPolicy and
    internalTrafficPolicy Local)."""
    return classify(port, slices).use(node)


def _backends(eps: Sequence[Endpoint], family: int) -> str:
    return ",".join(_vip(e.ip, e.port) for e in eps if _ip(e.ip).version == family)


def _family(ip: str) -> int:
    return _ip(ip).version


def _options(spec: Obj) -> tuple[dict[str, str], tuple[str, ...]]:
    """LB options and selection_fields for a Service."""
    options = {"event": "false", "reject": "true",
               "hairpin_snat_ip": str(HAIRPIN_MASQUERADE_IP)}
    fields: tuple[str, ...] = ()
    if spec.get("sessionAffinity") == "ClientIP":
        timeout = int(((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get(
            "timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
        if timeout >= MAX_AFFINITY_TIMEOUT:
            fields = ("ip_dst", "ip_src")
        else:
            options["affinity_timeout"] = str(timeout)
    return options, fields


def _node_port_ips(node_ips: Sequence[str]) -> list[str]:
    """Where a node's gateway router serves NodePorts: the node's IPs and, for
    the node's own host (which DNATs <node IP>:<nodePort> there), the router's
    masquerade IP."""
    if any(_family(ip) == 4 for ip in node_ips):
        return [*node_ips, str(GR_MASQUERADE_IP)]
    return list(node_ips)


def _switch_view(eps: Sequence[Endpoint], own_ips: Sequence[str], mgmt: Sequence[str]
                 ) -> list[Endpoint]:
    """Endpoints as one node's switch must reach them: a host-network endpoint
    of this node (an address of the node's own) by its management port
    address, through which the reply comes back to be un-DNATed."""
    out = []
    for e in eps:
        alias = next((m for m in mgmt if _family(m) == _family(e.ip)), None) \
            if e.ip in own_ips else None
        out.append(Endpoint(alias, e.port, e.node) if alias else e)
    return _unique(out)


# --- stage 1: the Service, read once -----------------------------------------------
@dataclass(frozen=True)
class PortLB:
    """One service port: where it is served and to which endpoints."""
    protocol: str
    port: int
    node_port: int | None  # only for NodePort and LoadBalancer Services
    endpoints: tuple[Endpoint, ...]  # cluster-wide choice
    local: Mapping[str, Sequence[Endpoint]]  # node -> its own; only with a Local policy


@dataclass(frozen=True)
class LBConfig:
    """What a Service's load balancers are made of."""
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]
    external: tuple[str, ...]  # externalIPs and LoadBalancer ingress IPs
    etp_local: bool
    itp_local: bool
    options: Mapping[str, str]
    selection: tuple[str, ...]
    ports: tuple[PortLB, ...]


def lb_config(svc: Obj, slices: Sequence[Obj], nodes: Iterable[str]) -> LBConfig:
    """A Service (that wants_lbs) and its EndpointSlices, for `nodes` (the
    nodes with a gateway router)."""
    md, spec = svc["metadata"], svc["spec"]
    external = tuple(dict.fromkeys(
        [*(spec.get("externalIPs") or []),
         *(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {})
           .get("ingress") or [] if i.get("ip"))]))
    node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    # Kubernetes applies externalTrafficPolicy to externally reachable services:
    # NodePorts, LoadBalancers and any service with externalIPs.
    etp_local = spec.get("externalTrafficPolicy") == "Local" and (node_ports or bool(external))
    itp_local = spec.get("internalTrafficPolicy") == "Local"
    nodes = list(nodes)
    ports = []
    for port in spec.get("ports") or []:
        eps = classify(port, slices)
        ports.append(PortLB(
            protocol=port.get("protocol") or "TCP", port=port["port"],
            node_port=port.get("nodePort") if node_ports else None,
            endpoints=tuple(eps.use()),
            local={n: eps.use(n) for n in nodes} if (etp_local or itp_local) else {}))
    options, selection = _options(spec)
    return LBConfig(
        namespace=md["namespace"], name=md["name"],
        cluster_ips=tuple(ip for ip in spec.get("clusterIPs") or [spec["clusterIP"]] if ip),
        external=external, etp_local=etp_local, itp_local=itp_local,
        options=options, selection=selection, ports=tuple(ports))


# --- stage 2: load balancer rows -----------------------------------------------------
def _cluster_vips(cfg: LBConfig, ports: Sequence[PortLB],
                  view: Callable[[Sequence[Endpoint]], Sequence[Endpoint]] = tuple
                  ) -> dict[str, str]:
    """The cluster LB: every VIP no Local policy keeps on a node, its
    endpoints as `view` gives them."""
    vips: dict[str, str] = {}
    for p in ports:
        eps = view(p.endpoints)
        for ip in () if cfg.itp_local else cfg.cluster_ips:
            vips[_vip(ip, p.port)] = _backends(eps, _family(ip))
        for ip in () if cfg.etp_local else cfg.external:
            vips[_vip(ip, p.port)] = _backends(eps, _family(ip))
    return vips


def _router_view(eps: Sequence[Endpoint], node_ips: Mapping[str, Sequence[str]],
                 mgmt_ips: Mapping[str, Sequence[str]]) -> list[Endpoint]:
    """Endpoints as a gateway router must reach them: a host-network endpoint
    (an address of its own node) by its node's management port address. The
    router owns its own node's address and would answer itself; and a reply
    from another node's host would come back over the underlay to the port
    the client chose, which br-ex hands to the host, not to OVN. Through the
    management port (the router SNATs to its join address) the reply comes
    back through OVN, as a pod backend's does."""
    out = []
    for e in eps:
        node = e.node or ""
        alias = next((m for m in mgmt_ips.get(node, ()) if _family(m) == _family(e.ip)),
                     None) if e.ip in node_ips.get(node, ()) else None
        out.append(Endpoint(alias, e.port, e.node) if alias else e)
    return _unique(out)


def _router_vips(cfg: LBConfig, ports: Sequence[PortLB], node: str,
                 node_ips: Mapping[str, Sequence[str]], mgmt_ips: Mapping[str, Sequence[str]]
                 ) -> dict[str, str]:
    """A node's gateway router LB: its NodePorts, and the external IPs with
    externalTrafficPolicy=Local (to the node's own endpoints). With
    externalTrafficPolicy=Cluster, host-network endpoints are reached through
    their node's management port (`_router_view`); with Local the router does
    not SNAT, so they are left as they are."""
    ips = node_ips[node]
    vips: dict[str, str] = {}
    for p in ports:
        for ip in cfg.external if cfg.etp_local else ():
            vips[_vip(ip, p.port)] = _backends(p.local[node], _family(ip))
        if p.node_port:
            use = p.local[node] if cfg.etp_local else _router_view(p.endpoints, node_ips,
                                                                   mgmt_ips)
            for ip in _node_port_ips(ips):
                vips[_vip(ip, p.node_port)] = _backends(use, _family(ip))
    return vips


def _switch_vips(cfg: LBConfig, ports: Sequence[PortLB], node: str, ips: Sequence[str],
                 mgmt: Sequence[str], host_eps: bool) -> dict[str, str]:
    """A node's switch LB: the ClusterIPs with internalTrafficPolicy=Local (to
    the node's own endpoints), every VIP of a Service with host-network
    endpoints, the external IPs with externalTrafficPolicy=Local, and the
    node's own NodePorts."""
    def backends(eps: Sequence[Endpoint], ip: str) -> str:
        return _backends(_switch_view(eps, ips, mgmt), _family(ip))

    vips: dict[str, str] = {}
    for p in ports:
        for ip in cfg.cluster_ips:
            if cfg.itp_local:
                vips[_vip(ip, p.port)] = backends(p.local[node], ip)
            elif host_eps:
                vips[_vip(ip, p.port)] = backends(p.endpoints, ip)
        for ip in cfg.external if (cfg.etp_local or host_eps) else ():
            vips[_vip(ip, p.port)] = backends(p.endpoints, ip)
        # A pod's own node's NodePort is balanced at its switch, before
        # routing (which hands the node's address to the host), with every
        # endpoint: to kube-proxy that traffic is neither external nor
        # internal and takes Cluster.
        if p.node_port:
            for ip in ips:
                vips[_vip(ip, p.node_port)] = backends(p.endpoints, ip)
    return vips


def _lb(cfg: LBConfig, proto: str, kind: str, node: str | None, vips: dict[str, str],
        options: Mapping[str, str], groups: Sequence[str] = (),
        routers: Sequence[str] = (), switches: Sequence[str] = ()) -> LoadBalancer:
    # The engine adds k8s.ovn.org/owner=<ns>/<name> (the owner), as ovn-kubernetes has it.
    return LoadBalancer(names.service_lb(cfg.namespace, cfg.name, proto, kind, node),
                        vips=vips, protocol=proto.lower(), options=options,
                        selection_fields=cfg.selection,
                        external_ids={"k8s.ovn.org/kind": "Service"},
                        groups=groups, routers=routers, switches=switches)


def lb_rows(cfg: LBConfig, node_ips: Mapping[str, Sequence[str]],
            mgmt_ips: Mapping[str, Sequence[str]]) -> list[Row]:
    """Per protocol: the cluster LB, then each node's router and switch LBs.
    `node_ips`: the nodes with a gateway router -> their gateway IPs;
    `mgmt_ips`: node -> its management port IPs."""
    # A Service with a host-network endpoint on a node is balanced per node
    # switch (that node's own endpoint seen through its management port), the
    # cluster LB then only on the gateway routers, as ovn-kubernetes does.
    host_eps = any(e.ip in node_ips.get(e.node or "", ()) and mgmt_ips.get(e.node or "")
                   for p in cfg.ports for e in p.endpoints)
    router_opts = {**cfg.options, "skip_snat": "true"} if cfg.etp_local else cfg.options
    rows: list[Row] = []
    for proto in dict.fromkeys(p.protocol for p in cfg.ports):
        ports = [p for p in cfg.ports if p.protocol == proto]
        # On the gateway routers only (with host-network endpoints), the
        # cluster LB reaches them as the node_router LBs do.
        vips = _cluster_vips(cfg, ports, (lambda eps: _router_view(eps, node_ips, mgmt_ips))
                             if host_eps else tuple)
        if vips:
            rows.append(_lb(cfg, proto, "cluster", None, vips, cfg.options, groups=[
                names.CLUSTER_ROUTER_LB_GROUP if host_eps else names.CLUSTER_LB_GROUP]))
        for node in sorted(node_ips):
            vips = _router_vips(cfg, ports, node, node_ips, mgmt_ips)
            if vips:
                rows.append(_lb(cfg, proto, "node_router", node, vips, router_opts,
                                routers=[names.gateway_router(node)]))
            vips = _switch_vips(cfg, ports, node, node_ips[node], mgmt_ips.get(node, ()),
                                host_eps)
            if vips:
                rows.append(_lb(cfg, proto, "node_switch", node, vips, cfg.options,
                                switches=[node]))
    return rows


def service_rows(svc: Obj, slices: Sequence[Obj], node_ips: Mapping[str, Sequence[str]],
                 mgmt_ips: Mapping[str, Sequence[str]] | None = None) -> list[Row]:
    """All load balancer rows of one Service. `node_ips`: node name -> its
    gateway IPs (the nodes with a gateway router, for NodePorts and per-node
    load balancers); `mgmt_ips`: node name -> its management port IPs (for
    host-network endpoints)."""
    if not wants_lbs(svc):
        return []
    return lb_rows(lb_config(svc, slices, node_ips), node_ips, mgmt_ips or {})
