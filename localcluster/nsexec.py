"""Run a command in a network namespace (and a node's mount namespace) with
setns alone.

`ip netns exec` also gives the command a mount namespace of its own, so
namespaces the command creates with `ip netns add` (a bind mount under
/run/netns) are invisible to everyone else, and it remounts /sys (hiding
the cgroup mounts the kubelet needs). The CRI runtime creates pod namespaces
that the node agent must open, so it and the kubelet are started this way.
With `--mount FILE` the command also enters the node's own filesystem view
(localcluster.nodefs), whose /run/netns is still the host's.

    python -m localcluster.nsexec [--mount FILE] NETNS COMMAND [ARGS...]
"""

from __future__ import annotations

import ctypes
import os
import sys

from localcluster.netns import enter_netns

CLONE_NEWNS = 0x00020000


def enter_mountns(path: str) -> None:
    """setns(2) into the mount namespace pinned at `path` (the process must
    be single-threaded, as it is before any work starts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the mount namespace {path!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


def main() -> None:
    args = sys.argv[1:]
    mount = None
    if args[:1] == ["--mount"] and len(args) > 1:
        mount, args = args[1], args[2:]
    if len(args) < 2:
        sys.exit("usage: python -m localcluster.nsexec [--mount FILE] NETNS COMMAND [ARGS...]")
    cwd = os.getcwd()
    if mount:
        enter_mountns(mount)
        os.chdir(cwd)  # setns into a mount namespace moves us to its root
    enter_netns(args[0])
    os.execvp(args[1], args[1:])


if __name__ == "__main__":
    main()
