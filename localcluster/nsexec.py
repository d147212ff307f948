"""Run a command in a network namespace while staying in our mount namespace.

`ip netns exec` also gives the command a mount namespace of its own, so
namespaces the command creates with `ip netns add` (a bind mount under
/run/netns) are invisible to everyone else, and it remounts /sys (hiding
the cgroup mounts the kubelet needs). The CRI runtime creates pod namespaces
that the node agent must open, so it and the kubelet are started this way.

    python -m localcluster.nsexec NETNS COMMAND [ARGS...]
"""

from __future__ import annotations

import os
import sys

from localcluster.netns import enter_netns


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit("usage: python -m localcluster.nsexec NETNS COMMAND [ARGS...]")
    enter_netns(sys.argv[1])
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
