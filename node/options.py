"""Node-agent flags, on top of the shared ones in ovnkube.config.

Each flag has an environment fallback (`OVNKUBE_` + the flag name in upper case
with underscores), like the shared flags.
"""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cni import shim
from ovnkube.annotations import IPAddress
from ovnkube.config import Config, ConfigError, check_remote, env_default, from_args

DEFAULT_OVS_DB = "unix:/var/run/openvswitch/db.sock"
DATAPATH_TYPES = ("system", "netdev")


def add_node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encap-ip", default=env_default("encap-ip", ""),
                   help="Geneve tunnel endpoint IP (default: the gateway interface's IP)")
    p.add_argument("--datapath-type", default=env_default("datapath-type", "system"),
                   help="OVS datapath of br-int and br-ex: system or netdev")
    p.add_argument("--ovs-db", default=env_default("ovs-db", DEFAULT_OVS_DB),
                   help="local Open_vSwitch DB remote (unix:PATH or tcp:IP:PORT)")
    p.add_argument("--ovs-rundir", default=env_default("ovs-rundir", ""),
                   help="OVS run dir (for ovs-vswitchd's control socket); informational")
    p.add_argument("--system-id", default=env_default("system-id", ""),
                   help="OVN chassis name (default: the existing system-id, else the node name)")
    p.add_argument("--cni-bin-dir", default=env_default("cni-bin-dir", shim.DEFAULT_BIN_DIR))
    p.add_argument("--cni-conf-dir", default=env_default("cni-conf-dir", shim.DEFAULT_CONF_DIR))
    p.add_argument("--cni-socket", default=env_default("cni-socket", shim.DEFAULT_SOCKET))
    p.add_argument("--cni-log-file", default=env_default("cni-log-file", shim.DEFAULT_LOG_FILE))
    p.add_argument("--cni-python", default=env_default("cni-python", ""),
                   help="python3 the installed shim runs with (default: this interpreter's "
                        "base python)")
    p.add_argument("--gateway-interface", default=env_default("gateway-interface", ""),
                   help="uplink moved into br-ex with the node IP (shared gateway); "
                        "empty: no gateway bridge")
    p.add_argument("--gateway-nexthop", default=env_default("gateway-nexthop", ""),
                   help="next hop for the gateway router (default: the uplink's default route)")
    p.add_argument("--pod-annotation-timeout", default=env_default("pod-annotation-timeout", "120"),
                   help="seconds an ADD waits for k8s.ovn.org/pod-networks")
    p.add_argument("--ovn-installed-timeout", default=env_default("ovn-installed-timeout", "120"),
                   help="seconds an ADD waits for ovn-controller to set ovn-installed")
    p.add_argument("--node-subnet-timeout", default=env_default("node-subnet-timeout", "300"),
                   help="seconds to wait for the master's k8s.ovn.org/node-subnets")
    p.add_argument("--uninstall-with-daemonset",
                   default=env_default("uninstall-with-daemonset", ""),
                   help="NAMESPACE/NAME of the agent's DaemonSet: exiting after it was "
                        "deleted, undo the node's set-up (CNI config, gateway, bridges)")


@dataclass(frozen=True)
class NodeOptions:
    common: Config
    node_name: str
    encap_ip: IPAddress | None
    datapath_type: str
    ovs_db: str
    ovs_rundir: str
    system_id: str
    cni_bin_dir: Path
    cni_conf_dir: Path
    cni_socket: Path
    cni_log_file: str
    cni_python: str
    gateway_interface: str
    gateway_nexthop: IPAddress | None
    pod_annotation_timeout: float
    ovn_installed_timeout: float
    node_subnet_timeout: float
    uninstall_with: tuple[str, str] | None = None  # the DaemonSet (namespace, name)


def _seconds(flag: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: not a number of seconds") from None
    if not 0 < v <= 3600:
        raise ConfigError(f"{flag} {text!r}: must be between 0 and 3600 seconds")
    return v


def _ip(flag: str, text: str) -> IPAddress | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as e:
        raise ConfigError(f"{flag} {text!r}: {e}") from None


def _ifname(flag: str, text: str) -> str:
    if text and (len(text) > 15 or "/" in text or " " in text):
        raise ConfigError(f"{flag} {text!r}: not a valid Linux interface name (1-15 chars)")
    return text


def _owner(text: str) -> tuple[str, str] | None:
    """NAMESPACE/NAME of the agent's DaemonSet, or None when not given."""
    if not text:
        return None
    ns, sep, name = text.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise ConfigError(f"--uninstall-with-daemonset {text!r}: want NAMESPACE/NAME")
    return ns, name


def node_options(a: argparse.Namespace) -> NodeOptions:
    common = from_args(a)
    if not common.node_name:
        raise ConfigError("--node-name is required (or OVNKUBE_NODE_NAME / NODE_NAME)")
    if a.datapath_type not in DATAPATH_TYPES:
        raise ConfigError(f"--datapath-type {a.datapath_type!r}: must be one of "
                          f"{', '.join(DATAPATH_TYPES)}")
    if not common.sb_address:
        raise ConfigError("--sb-address is required: the OVN Southbound DB ovn-controller "
                          "connects to (unix:PATH, tcp:IP:PORT or ssl:IP:PORT)")
    sock = Path(a.cni_socket)
    if not sock.is_absolute() or len(str(sock)) > 107:
        raise ConfigError(f"--cni-socket {a.cni_socket!r}: must be an absolute path under "
                          "108 bytes")
    for flag, d in (("--cni-bin-dir", a.cni_bin_dir), ("--cni-conf-dir", a.cni_conf_dir)):
        if not Path(d).is_absolute():
            raise ConfigError(f"{flag} {d!r}: must be an absolute path")
    return NodeOptions(
        common=common,
        node_name=common.node_name,
        encap_ip=_ip("--encap-ip", a.encap_ip),
        datapath_type=a.datapath_type,
        ovs_db=check_remote("--ovs-db", a.ovs_db),
        ovs_rundir=a.ovs_rundir,
        system_id=a.system_id,
        cni_bin_dir=Path(a.cni_bin_dir),
        cni_conf_dir=Path(a.cni_conf_dir),
        cni_socket=sock,
        cni_log_file=a.cni_log_file,
        cni_python=a.cni_python,
        gateway_interface=_ifname("--gateway-interface", a.gateway_interface),
        gateway_nexthop=_ip("--gateway-nexthop", a.gateway_nexthop),
        pod_annotation_timeout=_seconds("--pod-annotation-timeout", a.pod_annotation_timeout),
        ovn_installed_timeout=_seconds("--ovn-installed-timeout", a.ovn_installed_timeout),
        uninstall_with=_owner(a.uninstall_with_daemonset),
        node_subnet_timeout=_seconds("--node-subnet-timeout", a.node_subnet_timeout),
    )
