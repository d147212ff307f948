"""A node's part of the topology, pure. Shared gateway mode, as ovn-kubernetes
builds it:

    pod LSPs --- <node> switch --- rtos-<node> [ovn_cluster_router] rtoj- --- join
                 k8s-<node> (mgmt, .2)                                        |
                                             jtor-GR_<node> --- rtoj-GR_<node> [GR_<node>]
                                                                              | rtoe-GR_<node>
                                                               ext_<node> --- etor-GR_<node>
                                                               br-ex_<node> (localnet physnet)
"""

from __future__ import annotations

from northd_sync.rows import (
    ACL,
    NAT,
    GatewayChassis,
    LoadBalancer,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Row,
)
from ovnkube import names
from ovnkube.annotations import IPInterface, IPNetwork, L3GatewayConfig, mac_from_ip
from ovnkube.config import GR_MASQUERADE_IP, GR_SNAT_PORTS, HOST_MASQUERADE_IP, Config
from ovnkube.master.translate.cluster import join_router_ip

OWNER_TYPE = "Node"
GR_SNAT_PORT_RANGE = "{}-{}".format(*GR_SNAT_PORTS)
MGMT_ALLOW_PRIORITY = 1001  # NetworkPolicy's allow tier: above its default deny
NODE_IP_REROUTE_PRIORITY = 1004  # ovn-kubernetes' priority for pod -> own node IP


def has_gateway_router(chassis: str | None, gateway: L3GatewayConfig | None) -> bool:
    """Whether a node with a subnet and a join address gets its gateway router:
    once its agent has reported its chassis and a gateway with an address."""
    return bool(chassis and gateway and gateway.ip_addresses)


def node_rows(config: Config, node: str, subnet: IPNetwork, join_ip: IPInterface,
              chassis: str | None, gateway: L3GatewayConfig | None,
              mgmt_mac: str | None = None) -> list[Row]:
    """A node's switch, its router port, its management port and, when the
    node has reported its chassis and gateway, its gateway router."""
    gw_ip = names.node_gateway_ip(subnet)
    mgmt_ip = names.node_mgmt_ip(subnet)
    mgmt_mac = mgmt_mac or mac_from_ip(mgmt_ip)
    rtos = names.router_to_switch(node)
    rows: list[Row] = [
        LogicalSwitch(node, other_config={"subnet": str(subnet)},
                      load_balancer_groups=[names.CLUSTER_LB_GROUP,
                                            names.CLUSTER_SWITCH_LB_GROUP]),
        LogicalRouterPort(rtos, router=names.CLUSTER_ROUTER, mac=mac_from_ip(gw_ip),
                          networks=[f"{gw_ip}/{subnet.prefixlen}"]),
        LogicalSwitchPort(names.switch_to_router(node), switch=node, type="router",
                          addresses=["router"], options={"router-port": rtos}),
        LogicalSwitchPort(names.mgmt_port(node), switch=node,
                          addresses=[f"{mgmt_mac} {mgmt_ip}"]),
        # The node's own host (kubelet probes, host-network clients) reaches
        # its pods whatever NetworkPolicy says, as in ovn-kubernetes.
        ACL("to-lport", MGMT_ALLOW_PRIORITY,
            f"{'ip4' if mgmt_ip.version == 4 else 'ip6'}.src == {mgmt_ip}", "allow-related",
            switch=node, external_ids={"ip": str(mgmt_ip)}),
    ]
    if chassis:
        rows.append(GatewayChassis(names.gateway_chassis(rtos, chassis), router_port=rtos,
                                   chassis_name=chassis, priority=1))
    if has_gateway_router(chassis, gateway):
        assert chassis and gateway
        rows += gateway_rows(config, node, subnet, join_ip, chassis, gateway)
    return rows


def gateway_rows(config: Config, node: str, subnet: IPNetwork, join_ip: IPInterface,
                 chassis: str, gw: L3GatewayConfig) -> list[Row]:
    gr = names.gateway_router(node)
    node_ip = gw.ip_addresses[0]
    rtoj_cluster = join_router_ip(config)
    rows: list[Row] = [
        LogicalRouter(gr, options={
            "chassis": chassis, "lb_force_snat_ip": "router_ip", "snat-ct-zone": "0",
            # Static neighbours on the join switch: learning the cluster
            # router's MAC from the first NodePort reply lost that reply (and,
            # in the userspace datapath, the retransmits of that connection).
            "always_learn_from_arp_request": "false", "dynamic_neigh_routers": "false",
        }, external_ids={"physical_ip": str(node_ip.ip)},
            load_balancer_groups=[names.CLUSTER_LB_GROUP, names.CLUSTER_ROUTER_LB_GROUP]),
        LogicalRouterPort(names.gr_to_join(node), router=gr, mac=mac_from_ip(join_ip.ip),
                          networks=[str(join_ip)]),
        LogicalSwitchPort(names.join_to_gr(node), switch=names.JOIN_SWITCH, type="router",
                          addresses=["router"], options={"router-port": names.gr_to_join(node)}),
        LogicalSwitch(names.external_switch(node)),
        LogicalRouterPort(names.gr_to_ext(node), router=gr, mac=gw.mac_address,
                          networks=[str(i) for i in gw.ip_addresses]),
        LogicalSwitchPort(names.ext_to_gr(node), switch=names.external_switch(node),
                          type="router", addresses=[gw.mac_address],
                          options={"router-port": names.gr_to_ext(node),
                                   "nat-addresses": "router"}),
        LogicalSwitchPort(gw.interface_id or names.localnet_port(gw.bridge_id, node),
                          switch=names.external_switch(node), type="localnet",
                          addresses=["unknown"], options={"network_name": names.PHYSNET}),
    ]
    for cs in config.cluster_subnets:
        # Return traffic to pods goes back through the cluster router.
        rows.append(LogicalRouterStaticRoute(gr, ip_prefix=str(cs.cidr),
                                             nexthop=str(rtoj_cluster.ip)))
        # Pod traffic leaving the cluster is SNATed to the node's address, on
        # source ports the host does not use, so br-ex can tell replies apart.
        rows.append(NAT(gr, type="snat", external_ip=str(node_ip.ip),
                        logical_ip=str(cs.cidr), external_port_range=GR_SNAT_PORT_RANGE))
    if any(i.version == 4 for i in gw.ip_addresses):
        # The host's NodePort traffic to its own IP arrives from the masquerade
        # address (node/host_nodeports.py); replies go back out the external
        # port. The address is not a network of the port: the port's first
        # IPv4 network is also what lb_force_snat_ip=router_ip SNATs to.
        rows.append(LogicalRouterStaticRoute(gr, ip_prefix=f"{HOST_MASQUERADE_IP}/32",
                                             nexthop=str(HOST_MASQUERADE_IP),
                                             output_port=names.gr_to_ext(node)))
        # The host DNATs its whole NodePort range here; a port no Service
        # uses is refused at once (the Services' own VIPs, with a port, win).
        rows.append(LoadBalancer(names.masquerade_reject_lb(node),
                                 vips={str(GR_MASQUERADE_IP): ""}, routers=[gr],
                                 options={"reject": "true", "skip_snat": "true",
                                          "event": "false"}))
    for hop in gw.next_hops:
        rows.append(LogicalRouterStaticRoute(gr, ip_prefix="0.0.0.0/0", nexthop=str(hop),
                                             output_port=names.gr_to_ext(node)))
    # Pods reach their own node's addresses (hostNetwork pods, the Services
    # they back, an apiserver on the node) through the management port: the
    # gateway router owns those addresses too and would answer itself.
    mgmt_ip = names.node_mgmt_ip(subnet)
    for addr in gw.ip_addresses:
        if addr.version == mgmt_ip.version:
            rows.append(LogicalRouterPolicy(
                names.CLUSTER_ROUTER, NODE_IP_REROUTE_PRIORITY,
                f'inport == "{names.router_to_switch(node)}" && '
                f"ip{addr.version}.dst == {addr.ip} /* {node} */",
                "reroute", nexthops=(str(mgmt_ip),)))
    # Pods of this node leave the cluster through this node's gateway router.
    rows.append(LogicalRouterStaticRoute(names.CLUSTER_ROUTER, ip_prefix=str(subnet),
                                         nexthop=str(join_ip.ip), policy="src-ip"))
    # ...but replies to a gateway router (NodePort traffic it SNATed to its
    # join address) go to that router: a /32 outranks the /24 source route.
    rows.append(LogicalRouterStaticRoute(names.CLUSTER_ROUTER, ip_prefix=f"{join_ip.ip}/32",
                                         nexthop=str(join_ip.ip)))
    return rows
