"""The OVN/OVS test beds are real and clean up after themselves."""

from __future__ import annotations

import subprocess

from localcluster import netns as nets
from localcluster.ovn import OvnCentral, OvsNode
from localcluster.procs import run
from tests.nbapi import close, nb_api


def test_nb_write_read_through_ovsdbapp(ovn_central: OvnCentral) -> None:
    for remote in (ovn_central.nb_unix, ovn_central.nb_tcp):
        assert remote
        api = nb_api(remote)
        try:
            name = f"sw-{remote.split(':')[0]}"
            api.ls_add(name, external_ids={"test": "yes"}).execute(check_error=True)
            api.lsp_add(name, f"{name}-p1").execute(check_error=True)
            api.lsp_set_addresses(f"{name}-p1", ["0a:58:0a:f4:01:05 10.244.1.5"]).execute(
                check_error=True)
            sw = api.ls_get(name).execute(check_error=True)
            assert sw.external_ids == {"test": "yes"}
            assert [p.name for p in sw.ports] == [f"{name}-p1"]
        finally:
            close(api)
    # The real CLI sees what ovsdbapp wrote, and northd turned it into SB flows.
    shown = ovn_central.nbctl("show")
    assert "sw-unix-p1" in shown and "sw-tcp-p1" in shown
    assert "0a:58:0a:f4:01:05 10.244.1.5" in ovn_central.nbctl(
        "lsp-get-addresses", "sw-unix-p1")
    datapaths = ovn_central.sbctl("--bare", "--columns=external_ids", "list", "Datapath_Binding")
    assert "sw-unix" in datapaths and "sw-tcp" in datapaths


def test_central_stops_every_process(workdir) -> None:  # type: ignore[no-untyped-def]
    central = OvnCentral(workdir / "c").start()
    pids = [d.pid for d in central.daemons.daemons]
    assert len(pids) == 3
    central.stop()
    for pid in pids:
        assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def _pod_ns(netns_factory: nets.NetnsSet, node: OvsNode, name: str, ip: str) -> str:
    ns = netns_factory.netns(name)
    host_if = netns_factory.root_link(f"{ns[-6:]}h")  # unique and short
    nets.add_veth(host_if, "eth0", None, ns)
    nets.add_address("eth0", f"{ip}/24", ns)
    run(["ethtool", "-K", "eth0", "tx", "off"], netns=ns)
    node.add_port("br-int", host_if)
    return ns


def test_two_namespaces_ping_across_br_int(netns_factory: nets.NetnsSet,
                                           ovs_node: OvsNode) -> None:
    a = _pod_ns(netns_factory, ovs_node, "pa", "192.168.77.1")
    b = _pod_ns(netns_factory, ovs_node, "pb", "192.168.77.2")
    assert ovs_node.vsctl("get", "Bridge", "br-int", "datapath_type").strip() == "netdev"
    out = run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "192.168.77.2"], netns=a)
    assert " 0% packet loss" in out
    # TCP too (needs TX checksum offload off on the pod ends).
    server = subprocess.Popen(["ip", "netns", "exec", b, "python3", "-c",
                               "import socket;s=socket.create_server(('0.0.0.0',7777));"
                               "c,_=s.accept();c.sendall(c.recv(100)[::-1]);c.close()"])
    try:
        reply = run(["python3", "-c",
                     "import socket,time\n"
                     "for i in range(50):\n"
                     "  try: c=socket.create_connection(('192.168.77.2',7777),timeout=2); break\n"
                     "  except OSError: time.sleep(0.1)\n"
                     "c.sendall(b'olleh'); print(c.recv(100).decode())"], netns=a)
        assert reply.strip() == "hello"
    finally:
        server.kill()
        server.wait()


def test_ovs_node_inside_a_namespace(netns_factory: nets.NetnsSet, ovs_node_factory,  # type: ignore[no-untyped-def]
                                     ovn_central: OvnCentral, ovn_controller_factory) -> None:
    ns = netns_factory.netns("n1")
    node = ovs_node_factory("n1", netns=ns)
    # br-int's internal port exists in the node's namespace, not the root one.
    assert nets.link_index("br-int", ns) is not None
    assert nets.link_index("br-int") is None
    ovn_controller_factory(node, ovn_central, "chassis-n1", "192.168.78.1")
    ctl = next(d for d in ovn_central.daemons.daemons if d.name == "ovnsb_db")
    ctl.wait_until(lambda: "chassis-n1" in ovn_central.sbctl(
        "--bare", "--columns=name", "list", "Chassis"), what="showing the chassis")
