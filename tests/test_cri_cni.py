"""The CRI runtime's CNI execution, as containerd's libcni does it: config
selection, conflist chaining with real (tiny) plugin executables, errors,
result parsing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from localcluster.cri.cni import (
    CniRuntime,
    NoNetworkConfig,
    PluginError,
    load_network,
    result_ips,
)

# A plugin that records its call and answers like a CNI plugin would.
RECORDER = r'''
import json, os, sys
conf = json.load(sys.stdin)
with open(conf["log"], "a") as f:
    f.write(json.dumps({"type": conf["type"], "cmd": os.environ["CNI_COMMAND"],
                        "path": os.environ["CNI_PATH"], "conf": conf}) + "\n")
if conf.get("fail"):
    print(json.dumps({"cniVersion": "1.1.0", "code": 11, "msg": conf["fail"],
                      "details": "d"}))
    sys.exit(1)
if conf.get("garbage"):
    sys.stderr.write("plugin crashed\n")
    sys.exit(2)
if os.environ["CNI_COMMAND"] == "ADD":
    res = conf.get("prevResult") or {"cniVersion": conf["cniVersion"], "ips": []}
    res = dict(res)
    res["ips"] = res["ips"] + [{"address": conf["addr"]}] if conf.get("addr") else res["ips"]
    print(json.dumps(res))
'''


def write_plugin(bin_dir: Path, name: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    p = bin_dir / name
    p.write_text(f"#!{sys.executable} -I\n{RECORDER}")
    p.chmod(0o755)


def test_first_valid_config_in_lexical_order(tmp_path: Path) -> None:
    with pytest.raises(NoNetworkConfig):
        load_network(tmp_path / "missing")
    (tmp_path / "05-broken.conflist").write_text("{not json")
    (tmp_path / ".10-hidden.conflist").write_text(json.dumps(
        {"name": "hidden", "cniVersion": "1.1.0", "plugins": [{"type": "x"}]}))
    (tmp_path / "20-single.conf").write_text(json.dumps(
        {"name": "single", "cniVersion": "1.0.0", "type": "bridge"}))
    (tmp_path / "30-list.conflist").write_text(json.dumps(
        {"name": "list", "cniVersion": "1.1.0", "plugins": [{"type": "a"}, {"type": "b"}]}))
    (tmp_path / "00-notes.txt").write_text("ignored")
    net = load_network(tmp_path)
    assert (net.name, net.cni_version, [p["type"] for p in net.plugins]) == \
        ("single", "1.0.0", ["bridge"])
    (tmp_path / "20-single.conf").unlink()
    assert load_network(tmp_path).name == "list"


def test_conflist_chain_add_and_reverse_del(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    for name in ("first", "second"):
        write_plugin(bins, name)
    log = tmp_path / "calls.jsonl"
    (tmp_path / "10-net.conflist").write_text(json.dumps({
        "name": "net", "cniVersion": "1.1.0",
        "plugins": [{"type": "first", "log": str(log), "addr": "10.0.0.5/24"},
                    {"type": "second", "log": str(log),
                     "capabilities": {"portMappings": True}}]}))
    net = load_network(tmp_path)
    rt = CniRuntime([tmp_path / "nope", bins])
    pm = {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}]}
    res = rt.add(net, {"CNI_CONTAINERID": "c1"}, pm)
    assert res["ips"] == [{"address": "10.0.0.5/24"}]
    rt.delete(net, {"CNI_CONTAINERID": "c1"}, res, pm)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(c["type"], c["cmd"]) for c in calls] == [
        ("first", "ADD"), ("second", "ADD"), ("second", "DEL"), ("first", "DEL")]
    first_add, second_add, second_del, first_del = (c["conf"] for c in calls)
    assert first_add["name"] == "net" and first_add["cniVersion"] == "1.1.0"
    assert "prevResult" not in first_add and "runtimeConfig" not in first_add
    assert second_add["prevResult"]["ips"] == [{"address": "10.0.0.5/24"}]
    assert second_add["runtimeConfig"] == pm  # only for plugins with the capability
    assert second_del["prevResult"] == res and first_del["prevResult"] == res
    assert calls[0]["path"] == f"{tmp_path / 'nope'}:{bins}"


def test_plugin_errors(tmp_path: Path) -> None:
    bins = tmp_path / "bin"
    write_plugin(bins, "p")
    log = str(tmp_path / "log")
    (tmp_path / "a.conflist").write_text(json.dumps(
        {"name": "n", "cniVersion": "1.1.0", "plugins": [{"type": "p", "log": log,
                                                           "fail": "no IPs left"}]}))
    rt = CniRuntime([bins])
    with pytest.raises(PluginError) as e:
        rt.add(load_network(tmp_path), {})
    assert (e.value.code, e.value.msg, e.value.details, e.value.plugin) == \
        (11, "no IPs left", "d", "p")
    (tmp_path / "a.conflist").write_text(json.dumps(
        {"name": "n", "cniVersion": "1.1.0", "plugins": [{"type": "p", "log": log,
                                                           "garbage": True}]}))
    with pytest.raises(PluginError, match="plugin crashed"):
        rt.add(load_network(tmp_path), {})
    (tmp_path / "a.conflist").write_text(json.dumps(
        {"name": "n", "cniVersion": "1.1.0", "plugins": [{"type": "absent"}]}))
    with pytest.raises(PluginError, match='failed to find plugin "absent"'):
        rt.add(load_network(tmp_path), {})


def test_result_ips() -> None:
    res = {"interfaces": [{"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"},
                          {"name": "net1", "sandbox": "/run/netns/x"}],
           "ips": [{"address": "fd00::5/64", "interface": 1},
                   {"address": "10.0.0.5/24", "interface": 1},
                   {"address": "192.168.0.9/24", "interface": 2}]}
    assert result_ips(res) == ["10.0.0.5", "fd00::5"]
    assert result_ips({"ips": [{"address": "10.1.1.1/32"}]}) == ["10.1.1.1"]
    assert result_ips({"ip4": {"ip": "10.2.2.2/24"}}) == ["10.2.2.2"]
    assert result_ips({"ips": []}) == []


