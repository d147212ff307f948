"""The chart values an ovnkube-local cluster made with `--cni none` needs:
what a user of a real cluster looks up by hand (the apiserver's address, the
node for the databases and its IP, the datapath the machine has, the uplink
and its next hop). `ovnkube-local helm-values` writes them and prints the
file's path, for `helm install ... -f $(ovnkube-local helm-values)`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localcluster.state import CLUSTER_CIDR, SERVICE_CIDR, State


def values(s: State) -> dict[str, Any]:
    return {
        "kubernetes": {"apiServerHost": s.cp_ip, "apiServerPort": 6443},
        # dbReplicas 1 puts the databases on the control-plane node; these
        # are the members of `--set ovn.dbReplicas=3` (raft).
        "ovn": {"centralNode": s.control_plane, "centralIP": s.cp_ip,
                "dbNodes": [{"name": n, "ip": s.node_ip(n)} for n in s.all_nodes[:3]]},
        "cluster": {"subnets": CLUSTER_CIDR, "serviceCIDR": SERVICE_CIDR},
        # No openvswitch kernel module here: the userspace datapath. Each node's
        # eth0 is its uplink on the underlay, whose bridge is the next hop.
        "node": {"datapathType": "netdev", "gatewayInterface": "eth0",
                 "gatewayNexthop": s.ip(1)},
    }


def write(s: State) -> Path:
    path = Path(s.dir) / "helm-values.yaml"
    path.write_text("# ovnkube-local cluster " + s.name + "\n"
                    + json.dumps(values(s), indent=2) + "\n")  # JSON is YAML
    return path
