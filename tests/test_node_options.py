"""Node-agent flags: defaults, env fallbacks, and errors naming the bad value."""

from __future__ import annotations

import pytest

from node.main import main, parser
from node.options import node_options
from ovnkube.config import ConfigError

BASE = ["--node-name", "n1", "--sb-address", "unix:/tmp/sb.sock"]


def opts(*extra: str):  # type: ignore[no-untyped-def]
    return node_options(parser().parse_args([*BASE, *extra]))


def test_defaults() -> None:
    o = opts()
    assert o.datapath_type == "system"
    assert str(o.cni_socket) == "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock"
    assert str(o.cni_bin_dir) == "/opt/cni/bin" and str(o.cni_conf_dir) == "/etc/cni/net.d"
    assert o.pod_annotation_timeout == 120 and o.common.mtu == 1400
    assert o.encap_ip is None and o.gateway_interface == ""


def test_env_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVNKUBE_DATAPATH_TYPE", "netdev")
    monkeypatch.setenv("OVNKUBE_ENCAP_IP", "172.30.0.11")
    o = opts()
    assert o.datapath_type == "netdev" and str(o.encap_ip) == "172.30.0.11"


@pytest.mark.parametrize(("args", "needle"), [
    (["--datapath-type", "dpdk"], "--datapath-type 'dpdk'"),
    (["--encap-ip", "1.2.3"], "--encap-ip '1.2.3'"),
    (["--ovs-db", "db.sock"], "--ovs-db 'db.sock'"),
    (["--cni-socket", "rel/cni.sock"], "--cni-socket 'rel/cni.sock'"),
    (["--cni-bin-dir", "bin"], "--cni-bin-dir 'bin'"),
    (["--gateway-interface", "a-very-long-interface"], "a-very-long-interface"),
    (["--pod-annotation-timeout", "soon"], "--pod-annotation-timeout 'soon'"),
    (["--mtu", "99999"], "--mtu 99999"),
])
def test_bad_flags_are_named(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        opts(*args)
    assert needle in str(e.value)


def test_missing_required() -> None:
    with pytest.raises(ConfigError, match="--sb-address is required"):
        node_options(parser().parse_args(["--node-name", "n1"]))
    with pytest.raises(ConfigError, match="--node-name is required"):
        node_options(parser().parse_args(["--sb-address", "unix:/x", "--node-name", ""]))


def test_main_exits_2_on_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--datapath-type", "dpdk"]) == 2
    assert "--datapath-type 'dpdk'" in capsys.readouterr().err


def test_management_port_nat_rules() -> None:
    from ipaddress import ip_interface

    from node.mgmt_nat import nft_ruleset
    rules = nft_ruleset("ovn-k8s-mp0", [ip_interface("10.244.1.2/24")],
                        [ip_interface("172.18.0.10/24")])
    assert 'oifname "ovn-k8s-mp0" ip saddr != 10.244.1.2 snat to 10.244.1.2' in rules
    assert 'iifname "ovn-k8s-mp0" ip daddr 10.244.1.2 dnat to 172.18.0.10' in rules
    # Without a node address (no gateway) there is nothing to hand over to.
    assert "dnat" not in nft_ruleset("ovn-k8s-mp0", [ip_interface("10.244.1.2/24")])
