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
gateway router's too.

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
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from northd_sync.rows import LoadBalancer, Row
from ovnkube import names
from ovnkube.config import GR_MASQUERADE_IP, HAIRPIN_MASQUERADE_IP

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


def lb_name(ns: str, name: str, proto: str, kind: str, node: str | None = None) -> str:
    base = f"Service_{ns}/{name}_{proto}_{kind}"
    return f"{base}_{node}" if node else base


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


def _classify(port: Obj, slices: Iterable[Obj]) -> tuple[list[Endpoint], list[Endpoint]]:
    """(ready, serving+terminating) endpoints of one service port. Named target
    ports are resolved per slice (the slice's port carries the service port's
    name and the resolved number)."""
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
    return _unique(ready), _unique(fallback)


def _unique(eps: Iterable[Endpoint]) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for e in eps:
        seen.setdefault((e.ip, e.port), e)
    return sorted(seen.values(), key=lambda e: (ipaddress.ip_address(e.ip).packed, e.port))


def endpoints_for_port(port: Obj, slices: Iterable[Obj], node: str | None = None
                       ) -> list[Endpoint]:
    """Backends for one service port: ready endpoints, or serving+terminating
    ones when none is ready. With `node`, only that node's endpoints, the
    fallback decided for that node alone (externalTrafficPolicy and
    internalTrafficPolicy Local)."""
    ready, fallback = _classify(port, slices)
    if node is not None:
        ready = [e for e in ready if e.node == node]
        fallback = [e for e in fallback if e.node == node]
    return ready or fallback


def _backends(eps: Sequence[Endpoint], family: int) -> str:
    return ",".join(_vip(e.ip, e.port) for e in eps
                    if ipaddress.ip_address(e.ip).version == family)


def _family(ip: str) -> int:
    return ipaddress.ip_address(ip).version


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


def service_rows(svc: Obj, slices: Sequence[Obj], node_ips: Mapping[str, Sequence[str]],
                 mgmt_ips: Mapping[str, Sequence[str]] | None = None) -> list[Row]:
    """All load balancer rows of one Service. `node_ips`: node name -> its
    gateway IPs (for NodePorts and per-node load balancers); `mgmt_ips`: node
    name -> its management port IPs (for host-network endpoints)."""
    if not wants_lbs(svc):
        return []
    md, spec = svc["metadata"], svc["spec"]
    ns, name = md["namespace"], md["name"]
    cluster_ips = [ip for ip in spec.get("clusterIPs") or [spec["clusterIP"]] if ip]
    external = list(dict.fromkeys(
        [*(spec.get("externalIPs") or []),
         *(i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {})
           .get("ingress") or [] if i.get("ip"))]))
    node_ports = spec.get("type") in ("NodePort", "LoadBalancer")
    # Kubernetes applies externalTrafficPolicy to externally reachable services:
    # NodePorts, LoadBalancers and any service with externalIPs.
    etp_local = spec.get("externalTrafficPolicy") == "Local" and (node_ports or bool(external))
    itp_local = spec.get("internalTrafficPolicy") == "Local"
    options, selection = _options(spec)
    # The engine adds k8s.ovn.org/owner=<ns>/<name> (the owner), as ovn-kubernetes has it.
    ext_ids = {"k8s.ovn.org/kind": "Service"}

    # Each port's endpoints, classified once.
    by_proto: dict[str, list[tuple[Obj, list[Endpoint]]]] = {}
    for port in spec.get("ports") or []:
        by_proto.setdefault(port.get("protocol") or "TCP", []).append(
            (port, endpoints_for_port(port, slices)))

    mgmt_ips = mgmt_ips or {}
    # A Service with a host-network endpoint on a node is balanced per node
    # switch (that node's own endpoint seen through its management port), the
    # cluster LB then only on the gateway routers, as ovn-kubernetes does.
    host_eps = any(e.ip in node_ips.get(e.node or "", ()) and mgmt_ips.get(e.node or "")
                   for ports in by_proto.values() for _, eps in ports for e in eps)

    def switch_backends(eps: Sequence[Endpoint], node: str, fam: int) -> str:
        return _backends(_switch_view(eps, node_ips[node], mgmt_ips.get(node, ())), fam)

    rows: list[Row] = []
    for proto, ports in by_proto.items():
        cluster_vips: dict[str, str] = {}
        node_router_vips: dict[str, dict[str, str]] = {n: {} for n in node_ips}
        node_switch_vips: dict[str, dict[str, str]] = {n: {} for n in node_ips}
        for port, eps in ports:
            local = {n: endpoints_for_port(port, slices, n) for n in node_ips} \
                if (etp_local or itp_local) else {}
            for ip in cluster_ips:
                vip, fam = _vip(ip, port["port"]), _family(ip)
                if itp_local:
                    for node in node_ips:
                        node_switch_vips[node][vip] = switch_backends(local[node], node, fam)
                    continue
                cluster_vips[vip] = _backends(eps, fam)
                if host_eps:
                    for node in node_ips:
                        node_switch_vips[node][vip] = switch_backends(eps, node, fam)
            for ip in external:
                vip, fam = _vip(ip, port["port"]), _family(ip)
                if etp_local:
                    for node in node_ips:
                        node_router_vips[node][vip] = _backends(local[node], fam)
                        node_switch_vips[node][vip] = switch_backends(eps, node, fam)
                    continue
                cluster_vips[vip] = _backends(eps, fam)
                if host_eps:
                    for node in node_ips:
                        node_switch_vips[node][vip] = switch_backends(eps, node, fam)
            node_port = port.get("nodePort")
            if node_port and node_ports:
                for node, ips in node_ips.items():
                    use = local[node] if etp_local else eps
                    for ip in _node_port_ips(ips):
                        node_router_vips[node][_vip(ip, node_port)] = _backends(
                            use, _family(ip))
                    # A pod's own node's NodePort is balanced at its switch,
                    # before routing (which hands the node's address to the
                    # host), with every endpoint: to kube-proxy that traffic
                    # is neither external nor internal and takes Cluster.
                    for ip in ips:
                        node_switch_vips[node][_vip(ip, node_port)] = switch_backends(
                            eps, node, _family(ip))
        proto_l = proto.lower()
        if cluster_vips:
            rows.append(LoadBalancer(lb_name(ns, name, proto, "cluster"), vips=cluster_vips,
                                     protocol=proto_l, options=options,
                                     selection_fields=selection, external_ids=ext_ids,
                                     groups=[names.CLUSTER_ROUTER_LB_GROUP if host_eps
                                             else names.CLUSTER_LB_GROUP]))
        for node in sorted(node_ips):
            if node_router_vips[node]:
                opts = dict(options)
                if etp_local:
                    opts["skip_snat"] = "true"
                rows.append(LoadBalancer(
                    lb_name(ns, name, proto, "node_router", node), vips=node_router_vips[node],
                    protocol=proto_l, options=opts, selection_fields=selection,
                    external_ids=ext_ids, routers=[names.gateway_router(node)]))
            if node_switch_vips[node]:
                rows.append(LoadBalancer(
                    lb_name(ns, name, proto, "node_switch", node), vips=node_switch_vips[node],
                    protocol=proto_l, options=options, selection_fields=selection,
                    external_ids=ext_ids, switches=[node]))
    return rows
