"""A node test bed: nodes in namespaces joined by an underlay, each with its own
OVS, ovn-controller and `ovnkube node`; the master's part (NB topology, node
subnets, pod annotations) played through the real NB DB and apiserver; pods as
network namespaces wired by executing the installed CNI shim like kubelet."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster import netns as nets
from localcluster.kube import KubeControlPlane
from localcluster.ovn import OvnCentral, OvsNode
from localcluster.procs import Daemon, DaemonSet, run
from ovnkube.annotations import NODE_SUBNETS, POD_NETWORKS, PodNetwork, Route, mac_from_ip
from tests.waiting import eventually as eventually  # re-exported for the tests

REPO = Path(__file__).resolve().parent.parent
OVNKUBE = REPO / ".venv" / "bin" / "ovnkube"
UNDERLAY_GW = "172.30.0.1"
SHIM = "ovn-k8s-cni-overlay"


def tx_off(dev: str, netns: str) -> None:
    run(["ethtool", "-K", dev, "tx", "off"], netns=netns)


@dataclass
class Node:
    name: str
    index: int
    netns: str
    ovs: OvsNode
    dir: Path
    kubeconfig: Path
    daemons: DaemonSet = field(default_factory=DaemonSet)
    agent: Daemon | None = None
    agent_args: list[str] = field(default_factory=list)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{self.index}.0/24")

    @property
    def node_ip(self) -> str:
        return f"172.30.0.{10 + self.index}"

    @property
    def cni_socket(self) -> Path:
        return self.dir / "cni" / "cni.sock"

    @property
    def cni_bin(self) -> Path:
        return self.dir / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.dir / "net.d"

    @property
    def cni_log(self) -> Path:
        return self.dir / "cni.log"

    @property
    def conflist(self) -> Path:
        return self.cni_conf / "10-ovn-kubernetes.conflist"

    def ready(self) -> bool:
        """The agent's own readiness endpoint says ready (and the conflist is there)."""
        if not self.conflist.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.cni_socket))
            s.sendall(b"GET /ready HTTP/1.0\r\n\r\n")
            return s.recv(100).split(b" ")[1] == b"200"

    def wait_ready(self, timeout: float = 90) -> None:
        assert self.agent is not None
        self.agent.wait_until(self.ready, timeout=timeout, what="ready (/ready)")


@dataclass
class Pod:
    namespace: str
    name: str
    uid: str
    node: Node
    netns: str
    ip: str
    mac: str
    container_id: str = field(default_factory=lambda: secrets.token_hex(32))
    result: dict[str, Any] | None = None

    @property
    def iface_id(self) -> str:
        return f"{self.namespace}_{self.name}"

    @property
    def host_ifname(self) -> str:
        return self.container_id[:15]


@dataclass
class ShimResult:
    code: int
    out: dict[str, Any] | None
    stderr: str

    @property
    def error_code(self) -> int | None:
        return None if self.out is None else self.out.get("code")


class Bed:
    def __init__(self, kube: KubeControlPlane, central: OvnCentral,
                 netns_factory: nets.NetnsSet, ovs_factory: Callable[..., OvsNode],
                 workdir: Path) -> None:
        self.kube = kube
        self.central = central
        self.netns_factory = netns_factory
        self.ovs_factory = ovs_factory
        self.workdir = workdir
        self.api_client = kube.api_client()
        self.core = client.CoreV1Api(self.api_client)
        self.token = secrets.token_hex(3)
        self.nodes: list[Node] = []
        self.daemons = DaemonSet()
        self.underlay: str | None = None
        self.kube_ns = f"t-{self.token}"
        self.core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=self.kube_ns)))
        self.core.create_namespaced_service_account(self.kube_ns, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name="default")))
        self.central.nbctl("--may-exist", "lr-add", "ovn_cluster_router", "--", "set",
                           "Logical_Router", "ovn_cluster_router",
                           "external_ids:k8s-cluster-router=yes")

    # --- nodes ------------------------------------------------------------

    def _underlay(self) -> str:
        if self.underlay is None:
            ul = self.netns_factory.netns("ul")
            nets.add_bridge("ulbr", ul)
            nets.add_address("ulbr", f"{UNDERLAY_GW}/24", ul)
            tx_off("ulbr", ul)
            self.underlay = ul
        return self.underlay

    def add_node(self, start_agent: bool = True, master: bool = True,
                 extra_args: tuple[str, ...] = ()) -> Node:
        index = len(self.nodes) + 1
        name = f"n{index}-{self.token}"
        ns = self.netns_factory.netns(f"n{index}")
        ovs = self.ovs_factory(f"n{index}", netns=ns)
        d = self.workdir / f"agent{index}"
        # Uplink: up0 in the node, its peer on the underlay bridge.
        ul = self._underlay()
        peer = f"ul{index}"
        nets.add_veth("up0", peer, ns, ul)
        nets.set_master(peer, "ulbr", ul)
        tx_off(peer, ul)
        tx_off("up0", ns)
        nets.add_address("up0", f"172.30.0.{10 + index}/24", ns)
        node = Node(name, index, ns, ovs, d, d / "kubeconfig")
        self.nodes.append(node)
        self._kube_access(node)
        self.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        node.daemons.start(Daemon(
            "ovn-controller",
            ["ovn-controller", ovs.db_unix, "--no-chdir", "-vconsole:info", "-vfile:off",
             f"--pidfile={ovs.workdir / 'ovn-controller.pid'}"],
            d / "ovn-controller.log", netns=ns, env=ovs.env))
        if master:
            self.master_node(node)
        node.agent_args = [
            "--node-name", name, "--sb-address", self.central.sb_unix,
            "--k8s-kubeconfig", str(node.kubeconfig), "--datapath-type", "netdev",
            "--ovs-db", ovs.db_unix, "--ovs-rundir", str(ovs.workdir),
            "--cni-socket", str(node.cni_socket), "--cni-bin-dir", str(node.cni_bin),
            "--cni-conf-dir", str(node.cni_conf), "--cni-log-file", str(node.cni_log),
            "--gateway-interface", "up0", "--gateway-nexthop", UNDERLAY_GW,
            "--pod-annotation-timeout", "8", "--ovn-installed-timeout", "60",
            "-v", "debug", *extra_args]
        if start_agent:
            self.start_agent(node)
        return node

    def _kube_access(self, node: Node) -> None:
        """The apiserver lives in its own namespace: forward a loopback port of
        the node's namespace to it, and give the agent a kubeconfig for that."""
        node.dir.mkdir(parents=True, exist_ok=True)
        port_file = node.dir / "apiserver.port"
        fwd = node.daemons.start(Daemon(
            "apiserver-forward",
            [sys.executable, "-m", "localcluster.portforward", f"--netns={self.kube.netns}",
             f"--target={self.kube.advertise_ip}:6443", "--listen=127.0.0.1:0",
             f"--port-file={port_file}"],
            node.dir / "apiserver-forward.log", netns=node.netns,
            env={"PYTHONPATH": str(REPO)}))
        fwd.wait_until(port_file.exists, what="listening")
        cfg = json.loads(self.kube.inner_kubeconfig.read_text())
        cfg["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port_file.read_text()}"
        node.kubeconfig.write_text(json.dumps(cfg))

    def start_agent(self, node: Node, wait: bool = True) -> Daemon:
        node.agent = node.daemons.start(Daemon(
            "ovnkube-node", [str(OVNKUBE), "node", *node.agent_args],
            node.dir / "ovnkube-node.log", netns=node.netns))
        if wait:
            node.wait_ready()
        return node.agent

    def stop_agent(self, node: Node) -> None:
        assert node.agent is not None
        node.agent.stop()
        node.daemons.daemons.remove(node.agent)
        node.agent = None

    def master_node(self, node: Node) -> None:
        """What the master does for a new node: subnet annotation and the node's
        switch, router port and management port in the NB DB."""
        sn = node.subnet
        gw, mgmt = sn.network_address + 1, sn.network_address + 2
        nb = self.central.nbctl
        nb("--may-exist", "lrp-add", "ovn_cluster_router", f"rtos-{node.name}",
           mac_from_ip(gw), f"{gw}/{sn.prefixlen}")
        nb("--may-exist", "ls-add", node.name, "--", "set", "Logical_Switch", node.name,
           f"other_config:subnet={sn}", f"other_config:exclude_ips={mgmt}")
        nb("--may-exist", "lsp-add", node.name, f"stor-{node.name}", "--",
           "lsp-set-type", f"stor-{node.name}", "router", "--",
           "lsp-set-addresses", f"stor-{node.name}", "router", "--",
           "lsp-set-options", f"stor-{node.name}", f"router-port=rtos-{node.name}")
        addr = f"{mac_from_ip(mgmt)} {mgmt}"
        nb("--may-exist", "lsp-add", node.name, f"k8s-{node.name}", "--",
           "lsp-set-addresses", f"k8s-{node.name}", addr, "--",
           "lsp-set-port-security", f"k8s-{node.name}", addr)
        self.core.patch_node(node.name, {"metadata": {"annotations": {
            NODE_SUBNETS: json.dumps({"default": str(sn)})}}})

    # --- pods -------------------------------------------------------------

    def new_pod(self, node: Node, host: int, name: str | None = None, annotate: bool = True,
                lsp: bool = True) -> Pod:
        name = name or f"p{node.index}-{host}"
        netns = self.netns_factory.netns(f"{node.index}p{host}")
        ip = str(node.subnet.network_address + host)
        created = self.core.create_namespaced_pod(self.kube_ns, client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                node_name=node.name, automount_service_account_token=False,
                containers=[client.V1Container(name="c", image="pause")])))
        uid = str(created.metadata.uid)  # type: ignore[union-attr]
        pod = Pod(self.kube_ns, name, uid, node, netns, ip, mac_from_ip(ip))
        if lsp:
            self.master_lsp(pod)
        if annotate:
            self.annotate(pod)
        return pod

    def master_lsp(self, pod: Pod) -> None:
        addr = f"{pod.mac} {pod.ip}"
        self.central.nbctl("--may-exist", "lsp-add", pod.node.name, pod.iface_id, "--",
                           "lsp-set-addresses", pod.iface_id, addr, "--",
                           "lsp-set-port-security", pod.iface_id, addr, "--",
                           "set", "Logical_Switch_Port", pod.iface_id,
                           "external_ids:pod=true", f"external_ids:namespace={pod.namespace}",
                           f"options:requested-chassis={pod.node.name}",
                           f"options:iface-id-ver={pod.uid}")

    def pod_network(self, pod: Pod) -> PodNetwork:
        sn = pod.node.subnet
        gw = sn.network_address + 1
        return PodNetwork(
            ip_addresses=(ipaddress.ip_interface(f"{pod.ip}/{sn.prefixlen}"),),
            mac_address=pod.mac, gateway_ips=(gw,),
            routes=(Route(ipaddress.ip_network("100.64.0.0/16"), gw),))

    def annotate(self, pod: Pod, value: str | None = None) -> None:
        self.core.patch_namespaced_pod(pod.name, pod.namespace, {"metadata": {"annotations": {
            POD_NETWORKS: value if value is not None else self.pod_network(pod).to_annotation()
        }}})

    # --- the shim, as kubelet runs it -----------------------------------------

    def plugin_conf(self, node: Node, **extra: Any) -> dict[str, Any]:
        """Expand the conflist into one plugin's config, the way libcni does."""
        cl = json.loads(node.conflist.read_text())
        conf = {"cniVersion": cl["cniVersion"], "name": cl["name"], **cl["plugins"][0]}
        conf.update(extra)
        return conf

    def shim(self, node: Node, command: str, pod: Pod | None = None,
             conf: dict[str, Any] | str | None = None, env: dict[str, str] | None = None,
             timeout: float = 120) -> ShimResult:
        e: dict[str, str] = {"CNI_COMMAND": command, "CNI_PATH": str(node.cni_bin),
                             "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if pod is not None:
            e.update({"CNI_CONTAINERID": pod.container_id, "CNI_NETNS": f"/run/netns/{pod.netns}",
                      "CNI_IFNAME": "eth0",
                      "CNI_ARGS": (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};"
                                   f"K8S_POD_NAME={pod.name};K8S_POD_INFRA_CONTAINER_ID="
                                   f"{pod.container_id};K8S_POD_UID={pod.uid}")})
        e.update(env or {})
        if conf is None:
            conf = self.plugin_conf(node)
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        # kubelet runs the plugin from the root namespace; so do we.
        res = subprocess.run([str(node.cni_bin / SHIM)], input=stdin, capture_output=True,
                             text=True, env=e, timeout=timeout)
        out = json.loads(res.stdout) if res.stdout.strip() else None
        return ShimResult(res.returncode, out, res.stderr)

    def add(self, pod: Pod) -> dict[str, Any]:
        r = self.shim(pod.node, "ADD", pod)
        assert r.code == 0, f"ADD {pod.name} failed: {r.out} {r.stderr}"
        assert r.out is not None
        pod.result = r.out
        return r.out

    # --- teardown ---------------------------------------------------------

    def stop(self) -> None:
        for node in reversed(self.nodes):
            with contextlib.suppress(Exception):
                node.daemons.stop()
        with contextlib.suppress(Exception):
            for node in self.nodes:
                self.core.delete_node(node.name)
            self.core.delete_namespace(self.kube_ns)
        self.api_client.close()


def ping(netns: str, ip: str, count: int = 3) -> bool:
    res = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", str(count), "-i", "0.2",
                          "-W", "2", ip], capture_output=True, text=True, timeout=30)
    return res.returncode == 0


def tcp_echo(client_ns: str, server_ns: str, server_ip: str, port: int = 7777,
             payload_size: int = 200_000) -> bool:
    """Move `payload_size` bytes to a server in `server_ns` and get its digest back."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c",
         "import socket,hashlib\n"
         f"s=socket.create_server(('0.0.0.0',{port}))\n"
         "c,_=s.accept();h=hashlib.sha256()\n"
         "while d:=c.recv(65536): h.update(d)\n"
         "c.sendall(h.hexdigest().encode());c.close()"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out = run([sys.executable, "-c",
                   "import socket,time,hashlib,os\n"
                   f"data=os.urandom({payload_size})\n"
                   "for i in range(100):\n"
                   f"  try: c=socket.create_connection(('{server_ip}',{port}),timeout=5); break\n"
                   "  except OSError: time.sleep(0.1)\n"
                   "c.sendall(data);c.shutdown(socket.SHUT_WR);c.settimeout(20)\n"
                   "got=c.recv(100).decode()\n"
                   "print('ok' if got==hashlib.sha256(data).hexdigest() else 'bad '+got)"],
                  netns=client_ns, timeout=60)
        return out.strip() == "ok"
    finally:
        server.kill()
        server.wait()


def ovs_ports(node: Node) -> list[str]:
    return node.ovs.vsctl("list-ports", "br-int").split()


def links(netns: str | None) -> list[str]:
    out = run(["ip", "-o", "link", "show"], netns=netns)
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
