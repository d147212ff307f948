"""Helpers for the northd_sync tests: reading the NB with ovn-nbctl, a 3-member
raft NB cluster and SSL certificates. Every process started here is a
localcluster.procs.Daemon, stopped by `stop()` (call it in a finally)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localcluster.ovn import OVN_NB_SCHEMA
from localcluster.procs import Daemon, DaemonSet, free_port, run


def _decode(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
        tag, body = v
        if tag == "set":
            return [_decode(x) for x in body]
        if tag == "map":
            return {_decode(k): _decode(x) for k, x in body}
        if tag in ("uuid", "named-uuid"):
            return body
    return v


def as_list(v: Any) -> list[Any]:
    """OVSDB JSON shows a one-element set as the bare element."""
    return v if isinstance(v, list) else [v]


def nb_list(db: str, table: str, *columns: str) -> list[dict[str, Any]]:
    """Rows of an NB table as dicts (via ovn-nbctl --format=json)."""
    args = ["ovn-nbctl", f"--db={db}", "--timeout=30", "--format=json"]
    if columns:
        args.append("--columns=" + ",".join(("_uuid", *columns)))
    out = json.loads(run([*args, "list", table]))
    return [{h: _decode(v) for h, v in zip(out["headings"], row, strict=True)}
            for row in out["data"]]


def names(db: str, table: str) -> list[str]:
    return sorted(r["name"] for r in nb_list(db, table, "name"))


def wait_for(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def kill_hard(d: Daemon) -> None:
    """SIGKILL the daemon's process group (no clean shutdown) and reap it."""
    assert d.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(d.proc.pid, signal.SIGKILL)
    d.proc.wait(10)


def ovsdb_server(name: str, db: Path, workdir: Path, *remotes: str,
                 extra: tuple[str, ...] = ()) -> Daemon:
    argv = ["ovsdb-server", str(db), *(f"--remote={r}" for r in remotes),
            f"--unixctl={workdir / (name + '.ctl')}", f"--pidfile={workdir / (name + '.pid')}",
            "--no-chdir", "-vconsole:info", "-vfile:off", *extra]
    return Daemon(name, argv, workdir / f"{name}.log",
                  env={"OVS_RUNDIR": str(workdir), "OVS_DBDIR": str(workdir)})


class RaftNB:
    """A clustered NB database: `size` ovsdb-servers on 127.0.0.1."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.workdir = workdir
        self.size = size
        self.daemons = DaemonSet()
        self.members: list[Daemon] = []
        self.raft_ports = [free_port() for _ in range(size)]
        self.client_ports = [free_port() for _ in range(size)]

    @property
    def remote(self) -> str:
        return ",".join(f"tcp:127.0.0.1:{p}" for p in self.client_ports)

    def ctl(self, i: int) -> str:
        return str(self.workdir / f"nb{i}.ctl")

    def start(self) -> RaftNB:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            dbs = [self.workdir / f"nb{i}.db" for i in range(self.size)]
            run(["ovsdb-tool", "create-cluster", str(dbs[0]), str(OVN_NB_SCHEMA),
                 f"tcp:127.0.0.1:{self.raft_ports[0]}"])
            for i in range(1, self.size):
                run(["ovsdb-tool", "join-cluster", str(dbs[i]), "OVN_Northbound",
                     f"tcp:127.0.0.1:{self.raft_ports[i]}",
                     f"tcp:127.0.0.1:{self.raft_ports[0]}"])
            for i in range(self.size):
                d = self.daemons.start(ovsdb_server(
                    f"nb{i}", dbs[i], self.workdir, f"punix:{self.workdir / f'nb{i}.sock'}",
                    f"ptcp:{self.client_ports[i]}:127.0.0.1"))
                self.members.append(d)
            wait_for(self._formed, 60, "the raft cluster to form")
        except BaseException:
            self.stop()
            raise
        return self

    def status(self, i: int) -> str:
        return run(["ovs-appctl", "-t", self.ctl(i), "cluster/status", "OVN_Northbound"],
                   check=False, timeout=10)

    def _formed(self) -> bool:
        roles = []
        for i, d in enumerate(self.members):
            d.check_alive()
            st = self.status(i)
            if "Status: cluster member" not in st:
                return False
            m = re.search(r"^Role: (\w+)", st, re.M)
            roles.append(m.group(1) if m else "")
        return roles.count("leader") == 1

    def leader(self) -> int:
        for i, d in enumerate(self.members):
            if d.alive() and re.search(r"^Role: leader", self.status(i), re.M):
                return i
        raise AssertionError("no raft leader")

    def stop(self) -> None:
        self.daemons.stop()


def make_certs(d: Path) -> dict[str, Path]:
    """A CA, and a server and a client certificate it signed (EC P-256)."""
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    for who in ("server", "client"):
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN={who}")
        ossl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", f"{who}.pem", "-days", "2")
    return {n: d / n for n in ("ca.pem", "server.key", "server.pem", "client.key",
                               "client.pem")}
