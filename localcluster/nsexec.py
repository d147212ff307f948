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

import os
import sys

from localcluster.netns import enter_mountns, enter_netns


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
