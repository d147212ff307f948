"""What `ovnkube-local up` made, kept in /tmp/ovk-local-<name>/state.json so
`down`, `status` and the pass-through commands find it again: names,
addresses and directories of the cluster, its nodes and its daemons."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

BASE = Path("/tmp")
CLUSTER_CIDR = "10.244.0.0/16/24"
SERVICE_CIDR = "10.96.0.0/16"


def cluster_dir(name: str) -> Path:
    return BASE / f"ovk-local-{name}"


def netns_prefix(name: str) -> str:
    return f"ovk-{name}-"


def check_name(name: str) -> str:
    if not name or len(name) > 12 or not all(c.isalnum() or c == "-" for c in name) \
            or not name[0].isalpha():
        raise ValueError(f"cluster name {name!r}: want 1-12 letters, digits or '-', "
                         "starting with a letter")
    return name


def node_names(name: str, count: int) -> list[str]:
    return [f"{name}-worker" + (str(i + 1) if i else "") for i in range(count)]


@dataclass
class DaemonRecord:
    name: str
    pid: int
    netns: str | None
    log: str
    #: how to start it again (localcluster.faults): command line, extra environment
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: the node it serves ("" for the control plane's own: central, master, apiserver)
    node: str = ""


@dataclass
class State:
    name: str
    index: int
    nodes: list[str]
    dir: str
    api_port: int = 0
    daemons: list[DaemonRecord] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    ovs_nodes: dict[str, str] = field(default_factory=dict)  # node -> its OVS dir
    control_plane: str = ""  # the control-plane node, like kind's (tainted NoSchedule)
    cni: str = "ovn"  # "none": no network plugin, as kind's disableDefaultCNI
    db_replicas: int = 1  # 3: NB and SB are raft clusters of 3 members each

    @property
    def all_nodes(self) -> list[str]:
        return ([self.control_plane] if self.control_plane else []) + self.nodes

    @property
    def underlay(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"172.18.{self.index}.0/24")

    def ip(self, host: int) -> str:
        return str(self.underlay.network_address + host)

    @property
    def cp_ip(self) -> str:
        return self.ip(2)

    def node_ip(self, node: str) -> str:
        if node == self.control_plane:
            return self.cp_ip
        return self.ip(10 + self.nodes.index(node))

    @property
    def kubeconfig(self) -> Path:
        return Path(self.dir) / "kube" / "admin.kubeconfig"

    @property
    def inner_kubeconfig(self) -> Path:
        return Path(self.dir) / "kube" / "cluster.kubeconfig"

    def _members(self, which: str) -> list[int]:
        return list(range(self.db_replicas)) if self.cni == "ovn" else [0]

    def _sock(self, which: str, i: int) -> Path:
        name = f"ovn{which}_db" + (f"-{i}" if self.db_replicas > 1 else "")
        return Path(self.dir) / "central" / f"{name}.sock"

    @property
    def nb_unix(self) -> str:
        """The NB's unix socket(s) (OVN central of `up`; comma-separated raft
        members with db_replicas > 1)."""
        return ",".join(f"unix:{self._sock('nb', i)}" for i in self._members("nb"))

    @property
    def sb_unix(self) -> str:
        return ",".join(f"unix:{self._sock('sb', i)}" for i in self._members("sb"))

    @property
    def nb_address(self) -> str:
        """Where the NB listens to clients on the underlay (the chart's too)."""
        return ",".join(f"tcp:{self.cp_ip}:{6641 + 10 * i}" for i in self._members("nb"))

    @property
    def sb_address(self) -> str:
        return ",".join(f"tcp:{self.cp_ip}:{6642 + 10 * i}" for i in self._members("sb"))

    def netns(self, suffix: str) -> str:
        return f"{netns_prefix(self.name)}{suffix}"

    def node_netns(self, node: str) -> str:
        if node == self.control_plane:
            return self.netns("cp")
        return self.netns(f"n{self.nodes.index(node) + 1}")

    def pod_netns_prefix(self, node: str) -> str:
        if node == self.control_plane:
            return self.netns("p0-")
        return self.netns(f"p{self.nodes.index(node) + 1}-")

    def node_dir(self, node: str) -> Path:
        return Path(self.dir) / node

    def save(self) -> None:
        p = Path(self.dir) / "state.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.rename(p)

    @classmethod
    def load(cls, name: str) -> State:
        p = cluster_dir(name) / "state.json"
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise LookupError(f"no cluster named {name!r} (no {p})") from None
        data["daemons"] = [DaemonRecord(**d) for d in data.get("daemons", [])]
        data.pop("kubelet", None)  # written by versions that had two kubelets
        return cls(**data)


def used_indexes() -> set[int]:
    found = set()
    for p in BASE.glob("ovk-local-*/state.json"):
        with contextlib.suppress(Exception):
            found.add(int(json.loads(p.read_text())["index"]))
    return found
