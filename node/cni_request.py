"""A CNI call as the shim forwards it to the node's CNI server
(`{"env": {CNI_*}, "config": "<raw JSON>"}`): parsed and checked with the
rules the shim applies, and the CNI result an ADD answers with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cni.shim import (
    ERR_DECODE,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_UNSUPPORTED_FIELD,
    MAX_CONFIG_BYTES,
    CniError,
    check_env,
    parse_cni_args,
    parse_config,
)
from node import netlink
from ovnkube.annotations import PodNetwork


@dataclass
class CniRequest:
    command: str
    env: dict[str, str]
    config: dict[str, Any]
    args: dict[str, str]

    @property
    def container_id(self) -> str:
        return self.env.get("CNI_CONTAINERID", "")

    @property
    def ifname(self) -> str:
        return self.env.get("CNI_IFNAME", "")

    @property
    def netns(self) -> str:
        return self.env.get("CNI_NETNS", "")

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def pod_uid(self) -> str:
        return self.args.get("K8S_POD_UID", "")

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion", "1.1.0"))

    def __str__(self) -> str:
        pod = f" {self.pod_namespace}/{self.pod_name}" if self.pod_name else ""
        return f"{self.command} {self.container_id[:12]}{pod}".strip()


# The largest request body: the config plus the CNI_* environment.
MAX_REQUEST_BYTES = MAX_CONFIG_BYTES + (64 << 10)
REQUEST_FIELDS = ("env", "config")


def short(value: object, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_request(body: bytes) -> CniRequest:
    """The shim's request, checked with the same rules the shim applies."""
    if len(body) > MAX_REQUEST_BYTES:
        raise CniError(ERR_INVALID_CONFIG, f"request to the CNI server is {len(body)} bytes, "
                       f"more than {MAX_REQUEST_BYTES}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise CniError(ERR_DECODE, f"bad request to the CNI server: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise CniError(ERR_DECODE, f"bad request to the CNI server: {short(data)} is not an "
                       "object with env and config")
    unknown = sorted(k for k in data if k not in REQUEST_FIELDS)
    if unknown:
        raise CniError(ERR_UNSUPPORTED_FIELD, "bad request to the CNI server: unsupported "
                       "field " + ", ".join(f"{k!r}={short(data[k])}" for k in unknown[:5]))
    env, raw = data.get("env"), data.get("config")
    if not isinstance(env, dict):
        raise CniError(ERR_DECODE, f"bad request to the CNI server: env {short(env)} is not "
                       "an object")
    if not isinstance(raw, str):
        raise CniError(ERR_DECODE, f"bad request to the CNI server: config {short(raw)} is "
                       "not a string")
    bad = [k for k, v in env.items() if not isinstance(v, str)]
    if bad:
        raise CniError(ERR_INVALID_ENV, f"bad request to the CNI server: env {bad[0]!r}="
                       f"{short(env[bad[0]])} is not a string")
    command = check_env(env)
    if command == "VERSION":
        return CniRequest(command, env, {"cniVersion": "1.1.0"}, {})
    conf = parse_config(raw)
    return CniRequest(command, env, conf, parse_cni_args(env.get("CNI_ARGS", "")))


def build_result(req: CniRequest, net: PodNetwork, iface: netlink.PodIface) -> dict[str, Any]:
    ips: list[dict[str, Any]] = []
    for a in net.ip_addresses:
        entry: dict[str, Any] = {"address": str(a), "interface": 1}
        gw = next((g for g in net.gateway_ips if g.version == a.version), None)
        if gw is not None:
            entry["gateway"] = str(gw)
        if req.version == "0.4.0":
            entry["version"] = str(a.version)
        ips.append(entry)
    routes = [{"dst": "0.0.0.0/0" if g.version == 4 else "::/0", "gw": str(g)}
              for g in net.gateway_ips]
    routes += [{"dst": str(r.dest), "gw": str(r.next_hop)} for r in net.routes]
    return {
        "cniVersion": req.version,
        "interfaces": [
            {"name": iface.host_ifname, "mac": iface.host_mac},
            {"name": req.ifname, "mac": iface.pod_mac, "sandbox": req.netns},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    }


@dataclass
class Timings:
    annotation: float = 0.0
    plumbing: float = 0.0
    ovn_installed: float = 0.0

    def header(self) -> str:
        return (f"annotation={self.annotation * 1000:.1f}ms plumbing={self.plumbing * 1000:.1f}ms "
                f"ovn-installed={self.ovn_installed * 1000:.1f}ms")
