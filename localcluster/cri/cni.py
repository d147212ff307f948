"""CNI for the runtime's sandboxes, done the way containerd (libcni) does it:
the first network config in the conf dir (lexical order), each plugin of the
list executed with the CNI_* environment and its config on stdin (name and
cniVersion from the list, prevResult chained), DEL in reverse order with the
cached ADD result as prevResult (CNI spec 1.1.0)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from cni.shim import CniError

log = logging.getLogger(__name__)

CONF_EXTENSIONS = (".conf", ".conflist", ".json")
DEFAULT_TIMEOUT = 240.0  # the CRI's sandbox creation deadline is 4 minutes


class PluginError(CniError):
    """A plugin failed: the CNI error it printed, or what went wrong running it.
    Unlike the shim's CniError it names the plugin, and its code is 0 when the
    failure is the runtime's own (no plugin error to report), hence msg first."""

    def __init__(self, msg: str, code: int = 0, details: str = "", plugin: str = "") -> None:
        super().__init__(code, msg, details)
        self.plugin = plugin


class NoNetworkConfig(Exception):
    """The conf dir holds no usable network config (the network is not ready)."""


@dataclasses.dataclass
class CniNetwork:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    source: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CniNetwork:
        return cls(d["name"], d["cni_version"], d["plugins"], d.get("source", ""))


def _parse(path: Path) -> CniNetwork:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if path.suffix == ".conflist":
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise ValueError("a .conflist needs a non-empty \"plugins\" list")
        name, version = data.get("name", ""), data.get("cniVersion", "")
    else:  # a single plugin's config, used as a list of one
        plugins = [data]
        name, version = data.get("name", ""), data.get("cniVersion", "")
    if not name:
        raise ValueError("missing \"name\"")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not p.get("type"):
            raise ValueError(f"plugin {i} has no \"type\"")
    return CniNetwork(str(name), str(version), plugins, str(path))


def load_network(conf_dir: Path) -> CniNetwork:
    """The default network: the first valid config file in lexical order."""
    try:
        files = sorted(p for p in conf_dir.iterdir()
                       if p.suffix in CONF_EXTENSIONS and not p.name.startswith(".")
                       and p.is_file())
    except FileNotFoundError:
        files = []
    for path in files:
        try:
            return _parse(path)
        except (OSError, ValueError) as e:
            log.warning("skipping CNI config %s: %s", path, e)
    raise NoNetworkConfig(f"no valid CNI network config (*.conflist, *.conf, *.json) "
                          f"in {conf_dir}")


def cni_args(namespace: str, name: str, uid: str, sandbox_id: str) -> str:
    return (f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};"
            f"K8S_POD_INFRA_CONTAINER_ID={sandbox_id};K8S_POD_UID={uid}")


@dataclasses.dataclass
class CniRuntime:
    """Executes plugins from `bin_dirs`; with `exec_netns` the plugins run in
    that named namespace (the node's, when the kubelet runs outside it)."""

    bin_dirs: list[Path]
    exec_netns: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    _running: set[subprocess.Popen[bytes]] = dataclasses.field(default_factory=set)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def find(self, plugin_type: str) -> Path:
        for d in self.bin_dirs:
            p = d / plugin_type
            if os.access(p, os.X_OK) and p.is_file():
                return p
        raise PluginError(f"failed to find plugin \"{plugin_type}\" in path "
                       f"[{' '.join(str(d) for d in self.bin_dirs)}]", plugin=plugin_type)

    def kill_running(self) -> None:
        """Stop plugins still running (kubelet shutdown): their calls fail."""
        with self._lock:
            procs = list(self._running)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()

    def exec_plugin(self, plugin_type: str, env: dict[str, str], conf: dict[str, Any]
                    ) -> dict[str, Any] | None:
        path = self.find(plugin_type)
        argv = [str(path)]
        if self.exec_netns:
            argv = ["ip", "netns", "exec", self.exec_netns, *argv]
        full_env = {**os.environ, **env,
                    "CNI_PATH": os.pathsep.join(str(d) for d in self.bin_dirs)}
        stdin = json.dumps(conf).encode()
        with self._lock:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=full_env)
            self._running.add(proc)
        try:
            try:
                out, err = proc.communicate(stdin, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise PluginError(f"plugin timed out after {self.timeout:.0f}s",
                               plugin=plugin_type) from None
        finally:
            with self._lock:
                self._running.discard(proc)
        log.debug("CNI %s %s rc=%s stdout=%s stderr=%s", env.get("CNI_COMMAND"), plugin_type,
                  proc.returncode, out[:2000], err[-2000:])
        if proc.returncode != 0:
            try:
                e = json.loads(out)
                raise PluginError(str(e.get("msg", "")), int(e.get("code", 0)),
                               str(e.get("details", "")), plugin_type)
            except (ValueError, AttributeError):
                text = (err or out).decode(errors="replace").strip()
                raise PluginError(f"netplugin failed: {text!r}" if text
                               else f"netplugin failed with no error message: exit status "
                                    f"{proc.returncode}", plugin=plugin_type) from None
        if not out.strip():
            return None
        try:
            result = json.loads(out)
        except ValueError:
            raise PluginError(f"plugin printed a result that is not JSON: {out[:200]!r}",
                           plugin=plugin_type) from None
        return result if isinstance(result, dict) else None

    def _plugin_conf(self, net: CniNetwork, plugin: dict[str, Any],
                     prev: dict[str, Any] | None, runtime_config: dict[str, Any]
                     ) -> dict[str, Any]:
        conf = dict(plugin)
        conf["name"] = net.name
        conf["cniVersion"] = net.cni_version or plugin.get("cniVersion", "")
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities") or {}
        rc = {k: v for k, v in runtime_config.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        return conf

    def add(self, net: CniNetwork, env: dict[str, str],
            runtime_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """ADD through the whole list; returns the final result."""
        prev: dict[str, Any] | None = None
        for plugin in net.plugins:
            conf = self._plugin_conf(net, plugin, prev, runtime_config or {})
            res = self.exec_plugin(plugin["type"], {**env, "CNI_COMMAND": "ADD"}, conf)
            if res is None:
                raise PluginError("plugin returned no result on ADD", plugin=plugin["type"])
            prev = res
        assert prev is not None
        return prev

    def delete(self, net: CniNetwork, env: dict[str, str], prev: dict[str, Any] | None,
               runtime_config: dict[str, Any] | None = None) -> None:
        """DEL through the list in reverse order, with the ADD result as prevResult."""
        for plugin in reversed(net.plugins):
            conf = self._plugin_conf(net, plugin, prev, runtime_config or {})
            self.exec_plugin(plugin["type"], {**env, "CNI_COMMAND": "DEL"}, conf)


def result_ips(result: dict[str, Any], ifname: str = "eth0") -> list[str]:
    """The pod's IPs from a CNI result (IPv4 first), those on `ifname` in the
    sandbox when the result says which interface an IP is on."""
    ips: list[str] = []
    entries = result.get("ips")
    if isinstance(entries, list):
        ifaces = result.get("interfaces") or []
        wanted = {i for i, itf in enumerate(ifaces)
                  if isinstance(itf, dict) and itf.get("name") == ifname and itf.get("sandbox")}
        chosen = [e for e in entries if isinstance(e, dict) and e.get("interface") in wanted]
        for e in chosen or [e for e in entries if isinstance(e, dict)]:
            addr = str(e.get("address", ""))
            if addr:
                ips.append(addr.split("/")[0])
    else:  # CNI 0.2.0 results
        for key in ("ip4", "ip6"):
            v = result.get(key)
            if isinstance(v, dict) and v.get("ip"):
                ips.append(str(v["ip"]).split("/")[0])
    return sorted(ips, key=lambda ip: ":" in ip)
