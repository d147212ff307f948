"""`ovnkube node`: register the chassis, bring up the gateway bridge and the
management port, serve CNI, and install the CNI config once ready."""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from node import host_nodeports, mgmt_nat, netlink, uninstall
from node.cni_http import CniServer
from node.cniserver import BRIDGE, CniHandler
from node.conntrack import StaleUdpFlusher
from node.gateway_flows import GatewayFlows
from node.healthcheck import HealthChecks
from node.install import install_conflist, install_shim, installed_files
from node.kube import Kube, PodCache
from node.options import NodeOptions
from node.ovs import Ovs
from ovnkube import names
from ovnkube.annotations import (
    L3_GATEWAY_CONFIG,
    NODE_CHASSIS_ID,
    NODE_MGMT_PORT_MAC,
    NODE_PRIMARY_IFADDR,
    NODE_SUBNETS,
    AnnotationError,
    IPAddress,
    IPInterface,
    IPNetwork,
    L3GatewayConfig,
    mac_from_ip,
    parse_node_subnets,
)
from ovnkube.config import HAIRPIN_MASQUERADE_IP, ConfigError
from ovnkube.informer import Informer
from ovnkube.kubeclient import ResourceAPI

log = logging.getLogger(__name__)

MGMT_PORT = "ovn-k8s-mp0"
#: br-ex's external_ids: the node addresses (and next hop) moved onto it, to
#: put back when its device comes back bare, whether the apiserver answers or not
MOVED_ADDRESSES = "ovnkube-node-addresses"
MOVED_NEXT_HOP = "ovnkube-node-next-hop"
GATEWAY_BRIDGE = "br-ex"


@dataclass(frozen=True)
class Gateway:
    addresses: list[IPInterface]
    mac: str
    next_hops: list[IPAddress]


@dataclass
class Agent:
    opts: NodeOptions
    ovs: Ovs | None = None
    kube: Kube | None = None
    pods: PodCache | None = None
    server: CniServer | None = None
    flows: GatewayFlows | None = None
    health: HealthChecks | None = None
    services: Informer | None = None
    slices: Informer | None = None
    chassis_id: str = ""
    gateway: Gateway | None = None
    owner: uninstall.DaemonSetWatch | None = None
    _ready: str = "starting"
    _given_back: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def not_ready(self) -> str:
        if self._ready:
            return self._ready
        if self.ovs is not None and not self.ovs.connected():
            return f"not connected to the local OVS database {self.opts.ovs_db}"
        return ""

    @property
    def netdev(self) -> bool:
        return self.opts.datapath_type == "netdev"

    def start(self) -> None:
        o = self.opts
        self.ovs = Ovs(o.ovs_db)
        self.kube = Kube(o.common.kubeconfig, o.node_name)
        self.pods = PodCache(self.kube).start()
        handler = CniHandler(
            ovs=self.ovs, pods=self.pods, kube=self.kube, mtu=o.common.mtu, netdev=self.netdev,
            annotation_timeout=o.pod_annotation_timeout,
            ovn_installed_timeout=o.ovn_installed_timeout, not_ready=self.not_ready)
        # Serve from the start: STATUS says "not ready" (code 50) until we are.
        self.server = CniServer(o.cni_socket, handler).start()
        if o.uninstall_with is not None:
            self.owner = uninstall.DaemonSetWatch(self.kube.api_client, *o.uninstall_with,
                                                  on_deleted=self.give_node_back).start()
        self._ready = "registering the chassis"
        gateway = self.gateway = self.setup_gateway() if o.gateway_interface else None
        self.register_chassis(gateway)
        if gateway is not None:
            masq: str | None = None
            try:
                if host_nodeports.install(self.ovs, GATEWAY_BRIDGE, gateway.addresses,
                                          gateway.mac, self.netdev):
                    masq = host_nodeports.MASQ_PORT
            except (RuntimeError, OSError) as e:
                log.error("the host cannot reach its own NodePorts: %s", e)
            self.flows = GatewayFlows(GATEWAY_BRIDGE, o.gateway_interface, o.ovs_db,
                                      o.ovs_rundir, gateway.addresses, masq_port=masq).start()
        # Services and EndpointSlices: health check node ports, stale UDP conntrack.
        api = self.kube.api_client
        self.services = Informer(ResourceAPI(api, "/api/v1/services", "Service"))
        self.slices = Informer(ResourceAPI(
            api, "/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice"))
        self.health = HealthChecks(self.services, self.slices, o.node_name,
                                   self.flows.set_host_ports if self.flows else lambda p: None)
        StaleUdpFlusher(self.services, self.slices,
                        [str(a.ip) for a in gateway.addresses] if gateway else [], o.ovs_rundir)
        self.services.start()
        self.slices.start()
        self._ready = f"waiting for annotation {NODE_SUBNETS} on node {o.node_name}"
        subnets = self.wait_node_subnets()
        self.setup_management_port(subnets, gateway.addresses if gateway else [])
        self._ready = "waiting for the pod informer to sync"
        if not self.pods.synced.wait(o.node_subnet_timeout):
            raise TimeoutError("the pod list from the apiserver did not arrive")
        with self._lock:  # not while (or after) the node is given back
            if self._given_back:
                return
            install_shim(o.cni_bin_dir, o.cni_python)
            install_conflist(o.cni_conf_dir, o.cni_socket, o.cni_log_file, o.common.mtu)
        self._ready = ""
        log.info("node %s ready: chassis %s, CNI server on %s", o.node_name, self.chassis_id,
                 o.cni_socket)

    def run(self) -> int:
        try:
            self.start()
            self._stop.wait()
            return 0
        finally:
            self.uninstall_if_gone()
            self.close()

    def uninstall_if_gone(self) -> None:
        """Exiting: if the network is being uninstalled, give the node back
        (or let the DaemonSet watch finish doing so)."""
        o = self.opts
        if self.owner is not None:
            self.owner.stop()
        with self._lock:  # waits for a give-back under way
            if self._given_back:
                return
        if o.uninstall_with is not None and self.kube is not None \
                and uninstall.daemonset_gone(self.kube.api_client, *o.uninstall_with):
            self.give_node_back()

    def give_node_back(self) -> None:
        """The network is uninstalled (node/uninstall.py): undo this node's set-up."""
        o = self.opts
        with self._lock:
            if self._given_back:
                return
            self._given_back = True
            log.info("DaemonSet %s/%s is deleted: undoing this node's set-up",
                     *(o.uninstall_with or ("?", "?")))
            self._ready = "uninstalled"
            for part in (self.server, self.flows):
                if part is not None:
                    part.stop()
            g = self.gateway
            uninstall.give_node_back(
                installed_files(o.cni_bin_dir, o.cni_conf_dir),
                # br-int stays in OVS's database with the pods' ports: pods
                # that outlive a reinstall get their network back with it.
                o.ovs_db, [GATEWAY_BRIDGE],
                [GATEWAY_BRIDGE, BRIDGE, MGMT_PORT, host_nodeports.MASQ_PORT],
                [mgmt_nat.TABLE, host_nodeports.TABLE], o.gateway_interface,
                (g.mac, g.addresses, g.next_hops) if g is not None else None)
            log.info("node %s given back: no CNI config, no br-ex, the node IP on %s",
                     o.node_name, o.gateway_interface or "its interface")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        steps: list[tuple[str, object | None, str]] = [
            ("CNI server", self.server, "stop"), ("pod watch", self.pods, "stop"),
            ("gateway flows", self.flows, "stop"), ("service watch", self.services, "stop"),
            ("slice watch", self.slices, "stop"), ("health checks", self.health, "stop"),
            ("OVS connection", self.ovs, "close"), ("Kubernetes client", self.kube, "close")]
        for what, part, method in steps:
            if part is None:
                continue
            try:
                getattr(part, method)()
            except Exception:
                log.exception("stopping the %s", what)
        self.server, self.pods, self.ovs, self.kube = None, None, None, None
        self.flows, self.health, self.services, self.slices = None, None, None, None

    # --- chassis ----------------------------------------------------------

    def register_chassis(self, gateway: Gateway | None) -> None:
        o = self.opts
        assert self.ovs is not None and self.kube is not None
        encap = o.encap_ip
        if encap is None and gateway is not None:
            encap = gateway.addresses[0].ip
        if encap is None:
            raise ConfigError("--encap-ip is required when there is no --gateway-interface "
                              "to take the node IP from")
        existing = self.ovs.system_id()
        self.chassis_id = o.system_id or existing or o.node_name
        self.ovs.ensure_bridge(BRIDGE, o.datapath_type, **{"disable-in-band": "true"})
        self.ovs.bridge_set(BRIDGE, fail_mode="secure")
        ids = {
            "system-id": self.chassis_id,
            "ovn-remote": o.common.sb_address,
            "ovn-encap-type": "geneve",
            "ovn-encap-ip": str(encap),
            "ovn-bridge-datapath-type": o.datapath_type,
            "hostname": o.node_name,
        }
        if gateway is not None:
            ids["ovn-bridge-mappings"] = f"{names.PHYSNET}:{GATEWAY_BRIDGE}"
        self.ovs.set_external_ids(ids)
        annotations: dict[str, str | None] = {NODE_CHASSIS_ID: self.chassis_id}
        if gateway is not None:
            annotations[L3_GATEWAY_CONFIG] = L3GatewayConfig(
                mode="shared", interface_id=names.localnet_port(GATEWAY_BRIDGE, o.node_name),
                mac_address=gateway.mac, ip_addresses=tuple(gateway.addresses),
                next_hops=tuple(gateway.next_hops), bridge_id=GATEWAY_BRIDGE,
            ).to_annotation()
            v4 = [a for a in gateway.addresses if a.version == 4]
            v6 = [a for a in gateway.addresses if a.version == 6]
            annotations[NODE_PRIMARY_IFADDR] = json.dumps(
                {**({"ipv4": str(v4[0])} if v4 else {}), **({"ipv6": str(v6[0])} if v6 else {})})
        self.kube.annotate_node(annotations)
        log.info("registered chassis %s (encap %s, datapath %s)", self.chassis_id, encap,
                 o.datapath_type)

    # --- gateway ----------------------------------------------------------

    def setup_gateway(self) -> Gateway:
        """Shared gateway: br-ex carries the uplink and the node IP."""
        o = self.opts
        assert self.ovs is not None
        uplink = o.gateway_interface
        if self.ovs.port_bridge(uplink) == GATEWAY_BRIDGE and netlink.link_exists(
                GATEWAY_BRIDGE) and not netlink.read_uplink(uplink).addresses:
            info = netlink.read_uplink(GATEWAY_BRIDGE)  # restart: already moved
            log.info("%s already carries %s", GATEWAY_BRIDGE, uplink)
            if not info.addresses:
                info = self._readdress_gateway_bridge(info)
            elif not self._moved_addresses()[0]:  # moved by an agent that kept no record
                self._record_moved_addresses(info.addresses, info.default_gw)
        else:
            info = netlink.read_uplink(uplink)
            if not info.addresses:
                raise ConfigError(f"--gateway-interface {uplink!r} has no IP address to move "
                                  f"to {GATEWAY_BRIDGE}")
            self.ovs.ensure_bridge(GATEWAY_BRIDGE, o.datapath_type, hwaddr=info.mac)
            if self.netdev:
                netlink.tx_checksum_off(uplink)
            self.ovs.add_port(GATEWAY_BRIDGE, uplink)
            netlink.wait_link(GATEWAY_BRIDGE, 30)
            netlink.configure_host_iface(GATEWAY_BRIDGE, info.mac, [], info.mtu, [])
            netlink.move_addresses(uplink, GATEWAY_BRIDGE, info.addresses, info.default_gw)
            self._record_moved_addresses(info.addresses, info.default_gw)
            log.info("moved %s from %s to %s", ", ".join(map(str, info.addresses)), uplink,
                     GATEWAY_BRIDGE)
        netlink.isolate_uplink(uplink, info.mac)
        hops = [o.gateway_nexthop] if o.gateway_nexthop else (
            [info.default_gw] if info.default_gw else [])
        return Gateway(addresses=info.addresses, mac=info.mac, next_hops=hops)

    def _readdress_gateway_bridge(self, info: netlink.UplinkInfo) -> netlink.UplinkInfo:
        """br-ex came back without the node IP (the userspace datapath's bridge
        device dies with ovs-vswitchd, and with the node): put back what was
        moved to it. The record on the bridge comes first: without the node
        IP the apiserver may well be out of reach (a rebooted node); the
        node's annotation serves bridges made before the record was kept."""
        assert self.ovs is not None
        addresses, hop = self._moved_addresses()
        src = "the bridge's record"
        if not addresses:
            assert self.kube is not None
            raw = self.kube.node_annotations().get(L3_GATEWAY_CONFIG)
            if raw is None:
                raise ConfigError(f"{GATEWAY_BRIDGE} carries {self.opts.gateway_interface} but "
                                  f"has no address, and node {self.opts.node_name} has no "
                                  f"{L3_GATEWAY_CONFIG} to take it from")
            cfg = L3GatewayConfig.parse(raw)
            addresses = list(cfg.ip_addresses)
            hop = next((h for h in cfg.next_hops if h.version == 4), None)
            src = f"the node's {L3_GATEWAY_CONFIG}"
        # a device made again by ovs-vswitchd comes up down
        netlink.configure_host_iface(GATEWAY_BRIDGE, info.mac, [], info.mtu, [])
        netlink.add_addresses(GATEWAY_BRIDGE, addresses, hop)
        self._record_moved_addresses(addresses, hop)
        log.info("put %s back on %s (from %s)", ", ".join(map(str, addresses)),
                 GATEWAY_BRIDGE, src)
        return netlink.read_uplink(GATEWAY_BRIDGE)

    def _record_moved_addresses(self, addresses: Sequence[IPInterface],
                                hop: IPAddress | None) -> None:
        assert self.ovs is not None
        self.ovs.bridge_set(GATEWAY_BRIDGE, external_ids={
            MOVED_ADDRESSES: ",".join(map(str, addresses)),
            MOVED_NEXT_HOP: str(hop) if hop is not None else ""})

    def _moved_addresses(self) -> tuple[list[IPInterface], IPAddress | None]:
        """What _record_moved_addresses kept on br-ex (nothing if malformed)."""
        assert self.ovs is not None
        ids = self.ovs.bridge_external_ids(GATEWAY_BRIDGE) or {}
        try:
            addresses = [ipaddress.ip_interface(a) for a in
                         ids.get(MOVED_ADDRESSES, "").split(",") if a]
            raw_hop = ids.get(MOVED_NEXT_HOP, "")
            hop = ipaddress.ip_address(raw_hop) if raw_hop else None
        except ValueError as e:
            log.warning("ignoring %s's record of its addresses: %s", GATEWAY_BRIDGE, e)
            return [], None
        return addresses, hop

    # --- management port --------------------------------------------------

    def wait_node_subnets(self) -> list[IPNetwork]:
        assert self.kube is not None
        deadline = time.monotonic() + self.opts.node_subnet_timeout
        reported = None
        while True:
            value = self.kube.node_annotations().get(NODE_SUBNETS)
            if value is not None:
                try:
                    return parse_node_subnets(value)
                except AnnotationError as e:
                    # Not the master's writing: it replaces a malformed value.
                    self._ready = f"{e}; waiting for the master to replace it"
                    if value != reported:
                        reported = value
                        log.error("node %s: %s; waiting for the master to replace it",
                                  self.opts.node_name, e)
                        self.kube.post_node_event("ErrorParsingNodeAnnotation",
                                                  f"{e}; waiting for the master to replace it")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.opts.node_name} got no "
                                   f"{'valid ' if reported else ''}{NODE_SUBNETS} "
                                   f"annotation within {self.opts.node_subnet_timeout:.0f}s "
                                   "(is ovnkube master running?)")
            if self._stop.wait(0.5):
                raise InterruptedError("stopping")

    def setup_management_port(self, subnets: list[IPNetwork],
                              node_ips: list[IPInterface]) -> None:
        o = self.opts
        assert self.ovs is not None and self.kube is not None
        addrs: list[IPInterface] = []
        routes: list[tuple[IPNetwork, IPAddress | None]] = []
        for sn in subnets:
            gw = names.node_gateway_ip(sn)
            addrs.append(ipaddress.ip_interface(f"{names.node_mgmt_ip(sn)}/{sn.prefixlen}"))
            for cs in o.common.cluster_subnets:
                if cs.cidr.version == sn.version:
                    routes.append((cs.cidr, gw))
            for svc in o.common.service_cidrs:
                if svc.version == sn.version:
                    routes.append((svc, gw))
            if sn.version == 4:  # the host's hairpin replies (node/mgmt_nat.py)
                routes.append((ipaddress.ip_network(f"{HAIRPIN_MASQUERADE_IP}/32"), gw))
            if o.common.join_subnet.version == sn.version:
                # Replies of a host-network Service endpoint to a gateway
                # router that reached it through this port, SNATed to the
                # router's join address (NodePorts; translate/service.py).
                routes.append((o.common.join_subnet, gw))
        mac = mac_from_ip(addrs[0].ip)
        self.ovs.add_port(BRIDGE, MGMT_PORT, iface_type="internal",
                          external_ids={"iface-id": names.mgmt_port(o.node_name)}, mac=mac)
        netlink.wait_link(MGMT_PORT, 30)
        if self.netdev:
            netlink.tx_checksum_off(MGMT_PORT)
        netlink.configure_host_iface(MGMT_PORT, mac, addrs, o.common.mtu, routes)
        try:
            mgmt_nat.install(MGMT_PORT, addrs, node_ips)
        except (RuntimeError, OSError) as e:
            log.error("management port NAT failed (forwarded traffic not SNATed, "
                      "host-network Service endpoints unreachable): %s", e)
        else:
            # Every route through the port (the node subnet's too) from the
            # node's address, which mgmt_nat DNATs the port's host-network
            # Service traffic to: a UDP server bound to the wildcard address
            # answers from the route's source, and only an answer from the
            # node's address is un-DNATed (from another, conntrack takes it for
            # a new flow and moves its port off the clashing one). The host's
            # own new connections still leave SNATed to the port's address.
            sources: dict[IPNetwork, IPAddress] = {}
            for sn in subnets:
                src = next((i.ip for i in node_ips if i.version == sn.version), None)
                if src is not None:
                    sources.update((dst, src) for dst, _ in [(sn, None), *routes]
                                   if dst.version == src.version)
            if sources:
                netlink.configure_host_iface(
                    MGMT_PORT, None, [], None,
                    [(sn, None) for sn in subnets if sn in sources] + routes, sources=sources)
        self.kube.annotate_node({NODE_MGMT_PORT_MAC: mac})
        log.info("management port %s: %s %s, routes %s", MGMT_PORT, mac,
                 ", ".join(map(str, addrs)),
                 ", ".join(f"{d} via {g}" for d, g in routes))
