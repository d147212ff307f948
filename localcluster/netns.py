"""Network namespaces, veth pairs and addresses, created and always removed.

Everything is named with a caller-chosen prefix so that two clusters (or two
test runs) side by side never clash, and a sweep can find leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

from node.netlink import CLONE_NEWNET, CLONE_NEWNS, setns

log = logging.getLogger(__name__)

IFNAMSIZ = 15


def check_ifname(name: str) -> str:
    if not name or len(name) > IFNAMSIZ or "/" in name or " " in name:
        raise ValueError(f"interface name {name!r} is not a valid Linux name (1-15 chars)")
    return name


@contextlib.contextmanager
def _links(ns: str | None) -> Iterator[IPRoute | NetNS]:
    h: IPRoute | NetNS = NetNS(ns) if ns else IPRoute()
    try:
        yield h
    finally:
        h.close()


def enter_netns(name: str) -> None:
    """Move the calling thread into network namespace `name` (setns(2)).
    Sockets made afterwards live there; other threads are not affected."""
    setns(f"/run/netns/{name}", CLONE_NEWNET, f"network namespace {name!r}")


def enter_mountns(path: str) -> None:
    """Move the process into the mount namespace pinned at `path` (it must be
    single-threaded); this also moves it to that namespace's root directory."""
    setns(path, CLONE_NEWNS, f"the mount namespace {path!r}")


def create_netns(name: str) -> str:
    if name in netns.listnetns():
        raise ValueError(f"network namespace {name!r} already exists")
    netns.create(name)
    with _links(name) as h:
        h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")
    return name


def delete_netns(name: str) -> None:
    if name in netns.listnetns():
        netns.remove(name)


def list_netns(prefix: str = "") -> list[str]:
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def link_index(name: str, ns: str | None = None) -> int | None:
    with _links(ns) as h:
        found = h.link_lookup(ifname=name)
        return int(found[0]) if found else None


def add_veth(a: str, b: str, a_ns: str | None = None, b_ns: str | None = None,
             mtu: int | None = None) -> None:
    """Create the pair a<->b with a in a_ns and b in b_ns (None: root namespace)."""
    check_ifname(a)
    check_ifname(b)
    peer: dict[str, object] = {"ifname": b}
    if b_ns:
        peer["net_ns_fd"] = b_ns
    extra: dict[str, object] = {"mtu": mtu} if mtu else {}
    with _links(a_ns) as h:
        h.link("add", ifname=a, kind="veth", peer=peer, **extra)
        h.link("set", index=h.link_lookup(ifname=a)[0], state="up")
    with _links(b_ns) as h:
        idx = h.link_lookup(ifname=b)[0]
        if mtu:
            h.link("set", index=idx, mtu=mtu)
        h.link("set", index=idx, state="up")


def add_dummy(name: str, ns: str | None = None) -> None:
    """A link that only holds addresses. Kernels without the dummy driver get a
    port-less bridge, which serves the same purpose."""
    check_ifname(name)
    with _links(ns) as h:
        try:
            h.link("add", ifname=name, kind="dummy")
        except NetlinkError as e:
            if e.code != errno.EOPNOTSUPP:
                raise
            h.link("add", ifname=name, kind="bridge")
        h.link("set", index=h.link_lookup(ifname=name)[0], state="up")


def add_bridge(name: str, ns: str | None = None) -> None:
    check_ifname(name)
    with _links(ns) as h:
        h.link("add", ifname=name, kind="bridge")
        h.link("set", index=h.link_lookup(ifname=name)[0], state="up")


def set_master(name: str, master: str, ns: str | None = None) -> None:
    with _links(ns) as h:
        h.link("set", index=h.link_lookup(ifname=name)[0],
               master=h.link_lookup(ifname=master)[0])


def delete_link(name: str, ns: str | None = None) -> None:
    with _links(ns) as h:
        found = h.link_lookup(ifname=name)
        if found:
            h.link("del", index=found[0])


def add_address(name: str, cidr: str, ns: str | None = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    with _links(ns) as h:
        h.addr("add", index=h.link_lookup(ifname=name)[0], address=str(iface.ip),
               prefixlen=iface.network.prefixlen)


def add_route(dst: str, gateway: str | None = None, dev: str | None = None,
              ns: str | None = None) -> None:
    net = ipaddress.ip_network(dst)
    spec: dict[str, object] = {"dst": str(net.network_address), "dst_len": net.prefixlen}
    if gateway:
        spec["gateway"] = gateway
    with _links(ns) as h:
        if dev:
            spec["oif"] = h.link_lookup(ifname=dev)[0]
        h.route("add", **spec)


def wait_link_gone(name: str, ns: str | None = None, timeout: float = 5.0) -> None:
    # Removing a namespace deletes its veth ends asynchronously.
    deadline = time.monotonic() + timeout
    while link_index(name, ns) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


class NetnsSet:
    """Namespaces and root-namespace links made together, removed together."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.namespaces: list[str] = []
        self.root_links: list[str] = []

    def netns(self, suffix: str) -> str:
        name = create_netns(f"{self.prefix}{suffix}")
        self.namespaces.append(name)
        return name

    def root_link(self, name: str) -> str:
        self.root_links.append(name)
        return name

    def cleanup(self) -> None:
        for link in reversed(self.root_links):
            with contextlib.suppress(Exception):
                delete_link(link)
        for ns in reversed(self.namespaces):
            try:
                delete_netns(ns)
            except Exception:
                log.exception("could not delete namespace %s", ns)
        self.namespaces.clear()
        self.root_links.clear()


def netns_socket(netns: str | None, family: int, sock_type: int) -> socket.socket:
    """A socket created in network namespace `netns` (None: ours). A short-lived
    thread switches its own namespace (setns is per thread) and makes it; the
    socket stays in that namespace whichever thread uses it."""
    if not netns:
        return socket.socket(family, sock_type)
    out: list[socket.socket] = []
    err: list[BaseException] = []

    def make() -> None:
        try:
            enter_netns(netns)
            out.append(socket.socket(family, sock_type))
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=make, name=f"setns-{netns}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]
