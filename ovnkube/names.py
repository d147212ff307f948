"""The naming contract of master and node: the OVN names the master builds
and the node agent refers to (the management port's iface-id, a pod's
iface-id, the localnet port and its network), and the addresses a node
subnet reserves. As ovn-kubernetes names them (see docs/DESIGN).

Shared (`ovnkube/`), so the node agent needs no import of the master."""

from __future__ import annotations

from ovnkube.annotations import IPAddress, IPNetwork

CLUSTER_ROUTER = "ovn_cluster_router"
JOIN_SWITCH = "join"
CLUSTER_LB_GROUP = "clusterLBGroup"
CLUSTER_SWITCH_LB_GROUP = "clusterSwitchLBGroup"
CLUSTER_ROUTER_LB_GROUP = "clusterRouterLBGroup"
PHYSNET = "physnet"
ACL_LOGGING_METER = "acl-logging"


def router_to_join() -> str:
    return f"rtoj-{CLUSTER_ROUTER}"


def join_to_router() -> str:
    return f"jtor-{CLUSTER_ROUTER}"


def router_to_switch(node: str) -> str:
    return f"rtos-{node}"


def switch_to_router(node: str) -> str:
    return f"stor-{node}"


def mgmt_port(node: str) -> str:
    return f"k8s-{node}"


def gateway_router(node: str) -> str:
    return f"GR_{node}"


def gr_to_join(node: str) -> str:
    return f"rtoj-{gateway_router(node)}"


def join_to_gr(node: str) -> str:
    return f"jtor-{gateway_router(node)}"


def external_switch(node: str) -> str:
    return f"ext_{node}"


def gr_to_ext(node: str) -> str:
    return f"rtoe-{gateway_router(node)}"


def ext_to_gr(node: str) -> str:
    return f"etor-{gateway_router(node)}"


def localnet_port(bridge: str, node: str) -> str:
    return f"{bridge}_{node}"


def masquerade_reject_lb(node: str) -> str:
    return f"GR_{node}_masquerade_reject"


def pod_port(namespace: str, name: str) -> str:
    return f"{namespace}_{name}"


def join_router_ip(join_subnet: IPNetwork) -> IPAddress:
    """.1 of the join subnet: the cluster router's `rtoj-` port."""
    return join_subnet.network_address + 1


def node_gateway_ip(subnet: IPNetwork) -> IPAddress:
    """.1 of a node subnet: the cluster router's port, the pods' gateway."""
    return subnet.network_address + 1


def node_mgmt_ip(subnet: IPNetwork) -> IPAddress:
    """.2 of a node subnet: the management port."""
    return subnet.network_address + 2


def gateway_chassis(router_port: str, chassis: str) -> str:
    return f"{router_port}-{chassis}"


# --- Services ------------------------------------------------------------------
def service_lb(ns: str, name: str, proto: str, kind: str, node: str | None = None) -> str:
    """`Service_<ns>/<name>_<PROTO>_<kind>[_<node>]`."""
    base = f"Service_{ns}/{name}_{proto}_{kind}"
    return f"{base}_{node}" if node else base


# --- NetworkPolicy ---------------------------------------------------------------
# Their owner types are part of the port group and address set names.
NETPOL_NAMESPACE_OWNER = "NetpolNamespace"
NETWORK_POLICY_OWNER = "NetworkPolicy"
ADDRESS_SET_OWNER = "PodSelectorAddressSet"
FAMILIES = {4: "v4", 6: "v6"}


def hash_for_ovn(text: str) -> str:
    """`a` + the 64-bit FNV-1a hash of `text` in decimal (ovn-kubernetes' form),
    a name OVN accepts after `@` and `$`."""
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"a{h}"


def deny_pg_name(namespace: str, direction: str) -> str:
    return hash_for_ovn(f"{NETPOL_NAMESPACE_OWNER}:{namespace}:{direction}")


def policy_pg_name(namespace: str, name: str) -> str:
    return hash_for_ovn(f"{NETWORK_POLICY_OWNER}:{namespace}:{name}")


def address_set_name(peer_id: str, family: int) -> str:
    return hash_for_ovn(f"{ADDRESS_SET_OWNER}:{peer_id}:{FAMILIES[family]}")


def acl_name(*parts: str) -> str:
    """`NP:<part>:...`, cut to the NB schema's 63 characters."""
    return ":".join(("NP", *parts))[:63]
