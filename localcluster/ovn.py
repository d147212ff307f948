"""Real OVN central (NB + SB ovsdb-servers, ovn-northd), OVS nodes
(ovsdb-server + ovs-vswitchd) and ovn-controller, each in a private directory
and optionally inside a network namespace."""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localcluster.procs import Daemon, DaemonSet, path_exists, run

log = logging.getLogger(__name__)

OVN_NB_SCHEMA = Path("/usr/share/ovn/ovn-nb.ovsschema")
OVN_SB_SCHEMA = Path("/usr/share/ovn/ovn-sb.ovsschema")
OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")


def require_binaries(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise FileNotFoundError(
            f"missing {', '.join(missing)}: run hack/install-deps.sh (Debian packages "
            "openvswitch-switch, ovn-central, ovn-host)"
        )


def tool_version(tool: str) -> str:
    """First line of `<tool> --version`, e.g. 'ovn-nbctl 23.03.1'."""
    return run([tool, "--version"]).splitlines()[0].strip()


def _ovsdb_ready(remote: str, netns: str | None = None) -> bool:
    return bool(run(["ovsdb-client", "--timeout=2", "list-dbs", remote], netns=netns,
                    check=False, timeout=5).strip())


def _ovsdb_server(name: str, db: Path, sock: Path, workdir: Path, netns: str | None,
                  extra_remotes: tuple[str, ...] = ()) -> Daemon:
    argv = ["ovsdb-server", str(db), f"--remote=punix:{sock}",
            *(f"--remote={r}" for r in extra_remotes),
            f"--unixctl={workdir / (name + '.ctl')}", f"--pidfile={workdir / (name + '.pid')}",
            "--no-chdir", "-vconsole:info", "-vfile:off"]
    return Daemon(name, argv, workdir / f"{name}.log", netns=netns,
                  env={"OVS_RUNDIR": str(workdir), "OVS_DBDIR": str(workdir)})


def raft_role(ctl: Path, which: str) -> str:
    """The raft role ("leader", "follower", ...) of the NB ("nb") or SB ("sb")
    member behind control socket `ctl`; "" if it does not answer or has not
    joined."""
    dbname = "OVN_Northbound" if which == "nb" else "OVN_Southbound"
    out = run(["ovs-appctl", "-t", str(ctl), "cluster/status", dbname], check=False,
              timeout=10)
    m = re.search(r"^Role: (\w+)", out, re.M)
    return m.group(1) if m and "Status: cluster member" in out else ""


@dataclass
class OvnCentral:
    """NB and SB ovsdb-servers plus ovn-northd.

    Clients reach the databases through unix sockets (these cross network
    namespaces) and, when `tcp_host` is set, over TCP on that address.
    """

    workdir: Path
    netns: str | None = None
    tcp_host: str | None = None
    nb_port: int = 6641
    sb_port: int = 6642
    daemons: DaemonSet = field(default_factory=DaemonSet)

    #: raft members of each database (1: a standalone server per database)
    replicas: int = 1

    def member_sock(self, which: str, i: int = 0) -> Path:
        return self.workdir / (f"ovn{which}_db.sock" if self.replicas == 1
                               else f"ovn{which}_db-{i}.sock")

    def member_name(self, which: str, i: int = 0) -> str:
        return f"ovn{which}_db" if self.replicas == 1 else f"ovn{which}_db-{i}"

    def client_port(self, which: str, i: int = 0) -> int:
        return (self.nb_port if which == "nb" else self.sb_port) + 10 * i

    def raft_port(self, which: str, i: int) -> int:
        return self.client_port(which, i) + 2

    @property
    def nb_sock(self) -> Path:
        return self.member_sock("nb")

    @property
    def sb_sock(self) -> Path:
        return self.member_sock("sb")

    def _unix(self, which: str) -> str:
        return ",".join(f"unix:{self.member_sock(which, i)}" for i in range(self.replicas))

    def _tcp(self, which: str) -> str | None:
        if not self.tcp_host:
            return None
        return ",".join(f"tcp:{self.tcp_host}:{self.client_port(which, i)}"
                        for i in range(self.replicas))

    @property
    def nb_unix(self) -> str:
        """The NB's unix remote(s): comma-separated members of a raft cluster."""
        return self._unix("nb")

    @property
    def sb_unix(self) -> str:
        return self._unix("sb")

    @property
    def nb_tcp(self) -> str | None:
        return self._tcp("nb")

    @property
    def sb_tcp(self) -> str | None:
        return self._tcp("sb")

    def start(self) -> OvnCentral:
        require_binaries("ovsdb-server", "ovsdb-tool", "ovn-northd", "ovn-nbctl")
        if self.replicas not in (1, 3, 5):
            raise ValueError(f"database replicas {self.replicas}: want 1, 3 or 5")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.start_db("nb")
            self.start_db("sb")
            self.start_northd()
        except BaseException:
            self.stop()
            raise
        return self

    def start_db(self, which: str) -> Daemon:
        """The database's server, or its raft members (returns the first)."""
        schema = OVN_NB_SCHEMA if which == "nb" else OVN_SB_SCHEMA
        dbname = "OVN_Northbound" if which == "nb" else "OVN_Southbound"
        host = self.tcp_host or "127.0.0.1"
        dbs = [self.workdir / f"{self.member_name(which, i)}.db" for i in range(self.replicas)]
        if not dbs[0].exists():
            if self.replicas == 1:
                run(["ovsdb-tool", "create", str(dbs[0]), str(schema)])
            else:
                run(["ovsdb-tool", "create-cluster", str(dbs[0]), str(schema),
                     f"tcp:{host}:{self.raft_port(which, 0)}"])
                for i in range(1, self.replicas):
                    run(["ovsdb-tool", "join-cluster", str(dbs[i]), dbname,
                         f"tcp:{host}:{self.raft_port(which, i)}",
                         f"tcp:{host}:{self.raft_port(which, 0)}"])
        started = []
        for i, db in enumerate(dbs):
            sock = self.member_sock(which, i)
            port = self.client_port(which, i)
            remotes = (f"ptcp:{port}:{self.tcp_host}",) if self.tcp_host else ()
            d = self.daemons.start(_ovsdb_server(self.member_name(which, i), db, sock,
                                                 self.workdir, self.netns, remotes))
            d.wait_until(sock.exists, what="creating its unix socket")
            started.append(d)
        for i, d in enumerate(started):
            sock = self.member_sock(which, i)
            d.wait_until(functools.partial(_ovsdb_ready, f"unix:{sock}"),
                         timeout=60, what="serving its unix socket")
            if self.tcp_host:
                port = self.client_port(which, i)
                d.wait_until(functools.partial(_ovsdb_ready, f"tcp:{self.tcp_host}:{port}",
                                               self.netns),
                             what=f"serving TCP on {self.tcp_host}:{port}")
        if self.replicas > 1:
            started[0].wait_until(lambda: self.raft_roles(which).count("leader") == 1
                                  and "" not in self.raft_roles(which), timeout=60,
                                  what=f"one {dbname} raft leader among {self.replicas}")
        return started[0]

    def raft_roles(self, which: str) -> list[str]:
        """Each member's raft role ("leader", "follower", ...; "" if it does not
        answer or has not joined)."""
        return [raft_role(self.workdir / f"{self.member_name(which, i)}.ctl", which)
                for i in range(self.replicas)]

    def start_northd(self) -> Daemon:
        d = self.daemons.start(Daemon(
            "ovn-northd",
            ["ovn-northd", f"--ovnnb-db={self.nb_unix}", f"--ovnsb-db={self.sb_unix}",
             f"--unixctl={self.workdir / 'ovn-northd.ctl'}", "--no-chdir",
             "-vconsole:info", "-vfile:off"],
            self.workdir / "ovn-northd.log", netns=self.netns,
            env={"OVN_RUNDIR": str(self.workdir)}))
        d.wait_until(lambda: "active" in run(
            ["ovn-appctl", "-t", str(self.workdir / "ovn-northd.ctl"), "status"],
            check=False, timeout=5), what="active")
        return d

    def daemon(self, name: str) -> Daemon:
        return next(d for d in self.daemons.daemons if d.name == name)

    def nbctl(self, *args: str) -> str:
        return run(["ovn-nbctl", f"--db={self.nb_unix}", *args])

    def sbctl(self, *args: str) -> str:
        return run(["ovn-sbctl", f"--db={self.sb_unix}", *args])

    def stop(self) -> None:
        self.daemons.stop()


@dataclass
class OvsNode:
    """ovsdb-server + ovs-vswitchd with br-int (userspace datapath by default)."""

    workdir: Path
    netns: str | None = None
    datapath_type: str = "netdev"
    daemons: DaemonSet = field(default_factory=DaemonSet)

    @property
    def db_sock(self) -> Path:
        return self.workdir / "db.sock"

    @property
    def db_unix(self) -> str:
        return f"unix:{self.db_sock}"

    @property
    def env(self) -> dict[str, str]:
        return {"OVS_RUNDIR": str(self.workdir), "OVS_DBDIR": str(self.workdir),
                "OVN_RUNDIR": str(self.workdir)}

    def start(self, bridge: str | None = "br-int") -> OvsNode:
        require_binaries("ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            db = self.workdir / "conf.db"
            if not db.exists():
                run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)])
            d = self.daemons.start(_ovsdb_server("ovsdb-server", db, self.db_sock,
                                                 self.workdir, self.netns))
            d.wait_until(lambda: self.db_sock.exists() and _ovsdb_ready(self.db_unix),
                         what="serving its unix socket")
            self.vsctl("--no-wait", "init")
            v = self.daemons.start(Daemon(
                "ovs-vswitchd",
                ["ovs-vswitchd", self.db_unix, f"--unixctl={self.workdir / 'ovs-vswitchd.ctl'}",
                 f"--pidfile={self.workdir / 'ovs-vswitchd.pid'}", "--no-chdir",
                 # Restarted when it aborts, as ovs-ctl runs it: Debian's 3.1.0
                 # userspace conntrack can assert on NAT entries (fixed in 3.1.3).
                 "--monitor", "-vconsole:info", "-vfile:off"],
                self.workdir / "ovs-vswitchd.log", netns=self.netns, env=self.env))
            v.wait_until(path_exists(self.workdir / "ovs-vswitchd.ctl"), what="listening")
            if bridge:
                self.add_bridge(bridge)
        except BaseException:
            self.stop()
            raise
        return self

    def vsctl(self, *args: str, timeout: float = 30) -> str:
        return run(["ovs-vsctl", f"--db={self.db_unix}", "--timeout=20", *args],
                   netns=self.netns, timeout=timeout)

    def ofctl(self, *args: str) -> str:
        return run(["ovs-ofctl", *args], netns=self.netns, env=self.env)

    def appctl(self, *args: str) -> str:
        return run(["ovs-appctl", "-t", str(self.workdir / "ovs-vswitchd.ctl"), *args],
                   netns=self.netns)

    def add_bridge(self, name: str, **other: str) -> None:
        # Without --no-wait this returns once ovs-vswitchd has made the bridge.
        sets = [f"{k}={v}" for k, v in other.items()]
        self.vsctl("--may-exist", "add-br", name, "--", "set", "Bridge", name,
                   f"datapath_type={self.datapath_type}", *sets)

    def add_port(self, bridge: str, port: str, **external_ids: str) -> None:
        args = ["--may-exist", "add-port", bridge, port]
        if external_ids:
            args += ["--", "set", "Interface", port,
                     *(f'external_ids:{k}="{v}"' for k, v in external_ids.items())]
        self.vsctl(*args)

    def stop(self) -> None:
        # `exit --cleanup` makes ovs-vswitchd remove its datapath and the tap
        # devices of internal ports; a plain SIGTERM leaves them behind.
        vswitchd = next((d for d in self.daemons.daemons if d.name == "ovs-vswitchd"), None)
        if vswitchd and vswitchd.alive():
            run(["ovs-appctl", "-t", str(self.workdir / "ovs-vswitchd.ctl"), "exit", "--cleanup"],
                netns=self.netns, check=False, timeout=15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert vswitchd.proc is not None
                vswitchd.proc.wait(10)
        self.daemons.stop()


@dataclass
class OvnController:
    """ovn-controller for one OvsNode, registered as chassis `system_id`."""

    node: OvsNode
    sb_remote: str
    system_id: str
    encap_ip: str
    daemons: DaemonSet = field(default_factory=DaemonSet)
    #: False when the node agent writes the chassis settings itself
    configure: bool = True

    def start(self) -> OvnController:
        require_binaries("ovn-controller")
        if self.configure:
            self.configure_chassis()
        self.daemons.start(Daemon(
            "ovn-controller",
            ["ovn-controller", self.node.db_unix, "--no-chdir", "-vconsole:info", "-vfile:off",
             f"--pidfile={self.node.workdir / 'ovn-controller.pid'}"],
            self.node.workdir / "ovn-controller.log", netns=self.node.netns, env=self.node.env))
        return self

    def configure_chassis(self) -> None:
        self.node.vsctl(
            "set", "Open_vSwitch", ".",
            f"external_ids:system-id={self.system_id}",
            f'external_ids:ovn-remote="{self.sb_remote}"',
            "external_ids:ovn-encap-type=geneve",
            f"external_ids:ovn-encap-ip={self.encap_ip}",
            f"external_ids:ovn-bridge-datapath-type={self.node.datapath_type}",
        )

    def stop(self) -> None:
        self.daemons.stop()
