"""Undo what the node agent did to its node when the network is uninstalled.

A node agent that stops only to be restarted (an upgrade, a crash) must leave
everything in place: running pods keep their traffic. One that stops because
its DaemonSet is gone (`helm uninstall`) gives the node back as it found it:
no CNI config (the kubelet reports the node NotReady again), the node IP and
default route back on the uplink, no br-ex, no devices of the userspace
datapath, no NAT tables of ours. br-int stays in OVS's own database with the
pods' ports, as a node's OVS keeps them when ovn-kubernetes is removed: pods
that outlive a reinstall are reattached by it.
The agent watches its DaemonSet and gives the node back as soon as it is
deleted, not at SIGTERM: by then the uninstall may have stopped OVS, and with
the userspace datapath the node's IP (on br-ex) with it, so that the kubelet
could no longer even hear of the agent's deletion. Exiting, the agent looks
once more: deleted, or our own account no longer let in, means uninstall;
anything else, including an apiserver out of reach, means keep.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from kubernetes import client

from node import netlink
from ovnkube.annotations import IPAddress, IPInterface
from ovnkube.kubeclient import Obj, ResourceAPI

log = logging.getLogger(__name__)


def _daemonset(api: client.ApiClient, namespace: str, name: str) -> ResourceAPI:
    """The one DaemonSet, listed and watched by name (RBAC: its resourceName)."""
    return ResourceAPI(api, f"/apis/apps/v1/namespaces/{namespace}/daemonsets", "DaemonSet",
                       field_selector=f"metadata.name={name}")


def _deleting(obj: Obj) -> bool:
    return bool(obj.get("metadata", {}).get("deletionTimestamp"))


def daemonset_gone(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        items, _ = _daemonset(api, namespace, name).list(timeout=10)
    except client.ApiException as e:
        if e.status == 404:
            return True
        if e.status in (401, 403):
            # An uninstall removes our ServiceAccount and its rights with the
            # DaemonSet (an upgrade or restart never does).
            log.info("DaemonSet %s/%s: %s for us: our account went with the release",
                     namespace, name, e.status)
            return True
        log.warning("cannot tell whether DaemonSet %s/%s is gone (%s): keeping the node's "
                    "network", namespace, name, e.status)
        return False
    except Exception as e:  # unreachable apiserver: a restart, most likely
        log.warning("cannot read DaemonSet %s/%s (%s): keeping the node's network",
                    namespace, name, e)
        return False
    return not items or _deleting(items[0])


class DaemonSetWatch:
    """Knows, before the SIGTERM comes, that the agent's DaemonSet was deleted:
    by then an uninstall may have stopped OVS (and with the userspace
    datapath, the node's IP on br-ex) and the apiserver may be out of reach."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str,
                 on_deleted: Callable[[], None]) -> None:
        self.api, self.namespace, self.name = api, namespace, name
        self.on_deleted = on_deleted
        self.deleted = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daemonset-watch", daemon=True)

    def start(self) -> DaemonSetWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _deleted(self) -> None:
        self.deleted.set()
        try:
            self.on_deleted()
        except Exception:
            log.exception("giving the node back")

    def _run(self) -> None:
        res = _daemonset(self.api, self.namespace, self.name)
        while not self._stop.is_set():
            try:
                items, rv = res.list()
                if not items or _deleting(items[0]):
                    self._deleted()
                    return
                for kind, obj in res.watch(rv, timeout_seconds=120):
                    if kind == "DELETED" or (kind != "BOOKMARK" and _deleting(obj)):
                        self._deleted()
                        return
                    if self._stop.is_set():
                        return
            except Exception as e:  # the apiserver restarts, a 410: list again
                log.debug("DaemonSet %s/%s watch: %s", self.namespace, self.name, e)
                self._stop.wait(1)


def give_node_back(cni_files: Sequence[Path], ovs_db: str, bridges: Sequence[str],
                   links: Sequence[str], nft_tables: Sequence[str], uplink: str,
                   gateway: tuple[str, Sequence[IPInterface], Sequence[IPAddress]] | None
                   ) -> None:
    """In this order: no CNI config (the kubelet sends no more pods), no
    bridges (OVS lets go of the uplink), no devices the userspace datapath
    leaves behind, no NAT tables; then the node's MAC, IP and default route
    back on the uplink (gateway: its MAC, addresses, next hops)."""
    remove_cni_files(cni_files)
    delete_bridges(ovs_db, bridges)
    for name in links:
        if netlink.delete_link(name):
            log.info("deleted %s", name)
    delete_nft_tables(nft_tables)
    if gateway is not None:
        mac, addresses, hops = gateway
        try:
            restore_uplink(uplink, mac, addresses, hops)
        except (OSError, FileNotFoundError) as e:
            log.error("giving the node IP back to %s: %s", uplink, e)


def remove_cni_files(files: Sequence[Path]) -> None:
    for f in files:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
            log.info("removed %s", f)


def restore_uplink(uplink: str, mac: str, addresses: Sequence[IPInterface],
                   next_hops: Sequence[IPAddress]) -> None:
    """The node's MAC, ARP, addresses and default route back on the uplink."""
    netlink.release_uplink(uplink, mac)
    netlink.add_addresses(uplink, addresses,
                          next(iter(h for h in next_hops if h.version == 4), None))
    log.info("gave %s back to %s", ", ".join(map(str, addresses)), uplink)


def delete_bridges(ovs_db: str, bridges: Sequence[str]) -> None:
    for br in bridges:
        res = subprocess.run(["ovs-vsctl", f"--db={ovs_db}", "--timeout=10", "--if-exists",
                              "del-br", br], capture_output=True, text=True)
        if res.returncode != 0:
            log.warning("deleting %s: %s", br, res.stderr.strip())


def delete_nft_tables(tables: Sequence[str]) -> None:
    for t in tables:
        subprocess.run(["nft", "delete", "table", "ip", t], capture_output=True)
