"""What exists once per cluster: the cluster router, the join switch, the load
balancer groups and the ACL logging meter. Pure; also the owner every
translation's rows are filed under in northd_sync."""

from __future__ import annotations

import ipaddress

from northd_sync.rows import (
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPort,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    Owner,
    Row,
)
from ovnkube import names
from ovnkube.annotations import IPInterface, mac_from_ip
from ovnkube.config import Config

OWNER_TYPE = "Cluster"
OWNER = "default"


def owner(owner_type: str, name: str) -> Owner:
    return Owner(owner_type, name)


def join_router_ip(config: Config) -> IPInterface:
    """The cluster router's address on the join switch."""
    return ipaddress.ip_interface(
        f"{names.join_router_ip(config.join_subnet)}/{config.join_subnet.prefixlen}")


def cluster_rows(config: Config) -> list[Row]:
    """The cluster router, the join switch and the load balancer groups every
    node switch and gateway router use."""
    rtoj = join_router_ip(config)
    return [
        LogicalRouter(names.CLUSTER_ROUTER, external_ids={"k8s-cluster-router": "yes"},
                      options={"mcast_relay": "false"}),
        LogicalSwitch(names.JOIN_SWITCH),
        LogicalRouterPort(names.router_to_join(), router=names.CLUSTER_ROUTER,
                          mac=mac_from_ip(rtoj.ip), networks=[str(rtoj)]),
        LogicalSwitchPort(names.join_to_router(), switch=names.JOIN_SWITCH, type="router",
                          addresses=["router"],
                          options={"router-port": names.router_to_join()}),
        LoadBalancerGroup(names.CLUSTER_LB_GROUP),
        LoadBalancerGroup(names.CLUSTER_SWITCH_LB_GROUP),
        LoadBalancerGroup(names.CLUSTER_ROUTER_LB_GROUP),
        # Rate limit of NetworkPolicy ACL logging (ovn-kubernetes' default).
        Meter(names.ACL_LOGGING_METER, unit="pktps", bands=[MeterBand(rate=20)], fair=True),
    ]
