"""Remove what a killed test run or cluster left behind: our daemons (found by
their /tmp/ovk-* working directories) and our network namespaces (ovk*)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from localcluster import netns as nets

MARK = "/tmp/ovk-"
NETNS_PREFIX = "ovk"


def our_pids(marker: str = MARK) -> list[int]:
    """Processes whose command line mentions `marker` (a directory of ours)."""
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            pids.append(int(p.name))
    return pids


def sweep() -> tuple[int, int]:
    pids = our_pids()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(0.5)
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
    spaces = nets.list_netns(NETNS_PREFIX)
    for ns in spaces:
        nets.delete_netns(ns)
    return len(our_pids()), len(spaces)


def main() -> None:
    left, removed = sweep()
    print(f"removed {removed} namespaces; {left} processes still running")


if __name__ == "__main__":
    main()
