"""The local Open_vSwitch DB, through ovsdbapp: chassis registration, bridges,
pod and management ports, and waiting for ovn-controller's `ovn-installed`."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.open_vswitch import impl_idl
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)

TABLES = ("Open_vSwitch", "Bridge", "Port", "Interface")
# external_ids keys on a pod's Interface (the ones ovn-kubernetes writes).
IFACE_ID = "iface-id"
IFACE_ID_VER = "iface-id-ver"
ATTACHED_MAC = "attached_mac"
SANDBOX = "sandbox"
IP_ADDRESSES = "ip_addresses"
CNI_IFNAME = "k8s.ovn.org/cni-ifname"
CNI_NETNS = "k8s.ovn.org/cni-netns"
OVN_INSTALLED = "ovn-installed"


def vsctl(db: str, *args: str) -> str:
    """Run ovs-vsctl against `db`, for what the IDL does not cover (tables it
    does not watch, zone timeout policies); raises CalledProcessError."""
    return subprocess.run(["ovs-vsctl", f"--db={db}", "--timeout=10", *args],
                          capture_output=True, text=True, check=True).stdout


class _NotifyingIdl(connection.OvsdbIdl):
    """An IDL that wakes waiters on every row change."""

    changed: threading.Condition

    def notify(self, event: Any, row: Any, updates: Any = None) -> None:
        with self.changed:
            self.changed.notify_all()


class _NoWaitTransaction(impl_idl.OvsVsctlTransaction):
    """A vsctl-style transaction that does not wait for ovs-vswitchd to apply it."""

    def do_post_commit(self, txn: Any) -> None:
        return None


@dataclass(frozen=True)
class PodPort:
    name: str
    external_ids: dict[str, str]

    @property
    def sandbox(self) -> str:
        return self.external_ids.get(SANDBOX, "")


class Ovs:
    """One connection to the local Open_vSwitch DB.

    ovsdbapp keeps the connection on the API class, so each Ovs gets a class of
    its own (several agents can then live in one process, e.g. in tests).
    """

    def __init__(self, remote: str, timeout: float = 30.0) -> None:
        self.remote = remote
        self.changed = threading.Condition()
        idl = self._connect_idl(remote)
        idl.changed = self.changed
        self.conn = connection.Connection(idl=idl, timeout=timeout)
        api_cls = type("OvsApi", (impl_idl.OvsdbIdl,), {"_ovsdb_connection": None})
        self.api: Any = api_cls(self.conn)

    @staticmethod
    @retry(retry=retry_if_exception_type(Exception), stop=stop_after_delay(60),
           wait=wait_exponential(multiplier=0.1, max=2), reraise=True)
    def _connect_idl(remote: str) -> _NotifyingIdl:
        return _NotifyingIdl.from_server(remote, "Open_vSwitch", helper_tables=TABLES)

    def close(self) -> None:
        self.conn.stop(timeout=5)

    def connected(self) -> bool:
        return bool(self.conn.idl._session.is_connected())

    # --- chassis and bridges ----------------------------------------------

    def system_id(self) -> str:
        ids = self.api.db_get("Open_vSwitch", ".", "external_ids").execute(check_error=True)
        return str(ids.get("system-id", ""))

    def set_external_ids(self, values: dict[str, str]) -> None:
        self.api.db_set("Open_vSwitch", ".", ("external_ids", values)).execute(
            check_error=True)

    def external_ids(self) -> dict[str, str]:
        return dict(self.api.db_get("Open_vSwitch", ".", "external_ids").execute(
            check_error=True))

    def bridge_external_ids(self, name: str) -> dict[str, str] | None:
        rows = self.api.db_find("Bridge", ("name", "=", name),
                                columns=["external_ids"]).execute(check_error=True)
        return dict(rows[0]["external_ids"]) if rows else None

    def ensure_bridge(self, name: str, datapath_type: str, **other_config: str) -> None:
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_br(name, may_exist=True, datapath_type=datapath_type))
            txn.add(self.api.db_set("Bridge", name, ("datapath_type", datapath_type)))
            if other_config:
                txn.add(self.api.db_set("Bridge", name, ("other_config", other_config)))

    def bridge_set(self, name: str, **columns: Any) -> None:
        self.api.db_set("Bridge", name, *columns.items()).execute(check_error=True)

    def port_bridge(self, port: str) -> str | None:
        br = self.api.port_to_br(port).execute(check_error=False)
        return str(br) if br else None

    def add_port(self, bridge: str, port: str, iface_type: str = "",
                 external_ids: dict[str, str] | None = None, **iface: Any) -> None:
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_port(bridge, port, may_exist=True))
            cols: list[tuple[str, Any]] = [("type", iface_type), *iface.items()]
            if external_ids:
                cols.append(("external_ids", external_ids))
            txn.add(self.api.db_set("Interface", port, *cols))

    def iface_external_ids(self, name: str) -> dict[str, str] | None:
        rows = self.api.db_find("Interface", ("name", "=", name),
                                columns=["external_ids"]).execute(check_error=True)
        return dict(rows[0]["external_ids"]) if rows else None

    def iface_ofport(self, name: str) -> int | None:
        rows = self.api.db_find("Interface", ("name", "=", name),
                                columns=["ofport"]).execute(check_error=True)
        if not rows or not rows[0]["ofport"]:
            return None
        v = rows[0]["ofport"]
        return int(v[0] if isinstance(v, list) else v)

    # --- pod ports --------------------------------------------------------

    def add_pod_port(self, bridge: str, port: str, external_ids: dict[str, str]) -> list[str]:
        """Add the pod's host veth to br-int in one transaction, removing ports
        of older sandboxes of the same pod (same iface-id) on the way; returns
        the names of the stale ports it removed."""
        iface_id = external_ids[IFACE_ID]
        stale = [p.name for p in self.pod_ports()
                 if p.external_ids.get(IFACE_ID) == iface_id and p.name != port]
        # No wait for ovs-vswitchd to apply it (ovsdbapp's vsctl-style
        # transactions block the one connection thread until it has): the ADD
        # waits for ovn-installed anyway, which comes only after that.
        with _NoWaitTransaction(self.api, self.conn, self.conn.timeout,
                                check_error=True) as txn:
            for name in stale:
                txn.add(self.api.del_port(name, if_exists=True))
            txn.add(self.api.del_port(port, if_exists=True))
            txn.add(self.api.add_port(bridge, port, may_exist=False))
            txn.add(self.api.db_set("Interface", port, ("external_ids", external_ids)))
        return stale

    def del_port(self, port: str) -> None:
        self.api.del_port(port, if_exists=True).execute(check_error=True)

    def pod_ports(self) -> list[PodPort]:
        """Every Interface a CNI ADD made (it carries the sandbox id)."""
        rows = self.api.db_list("Interface", columns=["name", "external_ids"]).execute(
            check_error=True)
        return [PodPort(r["name"], dict(r["external_ids"])) for r in rows
                if r["external_ids"].get(SANDBOX)]

    def ports_of_sandbox(self, sandbox: str, ifname: str | None = None) -> list[PodPort]:
        return [p for p in self.pod_ports() if p.sandbox == sandbox
                and (ifname is None or p.external_ids.get(CNI_IFNAME, ifname) == ifname)]

    def wait_ovn_installed(self, port: str, timeout: float,
                           abandon: Any = None) -> None:
        """Wait for ovn-controller to mark the port's flows installed.

        Woken by every change the IDL sees, re-checked at least every 200 ms;
        `abandon()` may raise to give up early (pod deleted or replaced).
        """
        deadline = time.monotonic() + timeout
        while True:
            ids = self.iface_external_ids(port)
            if ids is None:
                raise LookupError(f"OVS interface {port!r} disappeared while waiting for "
                                  f"{OVN_INSTALLED}")
            if ids.get(OVN_INSTALLED) == "true":
                return
            if abandon is not None:
                abandon()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"timed out after {timeout:.0f}s waiting for ovn-controller to set "
                    f"external_ids:{OVN_INSTALLED} on OVS interface {port!r} "
                    f"(iface-id {ids.get(IFACE_ID)!r}): is ovn-controller running and is the "
                    "logical switch port in the NB DB?")
            with self.changed:
                self.changed.wait(min(left, 0.2))
