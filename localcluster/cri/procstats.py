"""CPU time and memory of a container: its process group, read from /proc."""

from __future__ import annotations

import os

_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def group_usage(pgid: int) -> tuple[int, int]:
    """(CPU nanoseconds, resident bytes) summed over the live processes of
    process group `pgid`, including the CPU of children they reaped."""
    cpu = rss = 0
    if pgid <= 0:
        return 0, 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (stat field 3): pgrp is field 5, utime..cstime
        # fields 14-17, rss field 24.
        if int(fields[2]) != pgid:
            continue
        cpu += sum(int(x) for x in fields[11:15]) * _TICK_NS
        rss += int(fields[21]) * _PAGE
    return cpu, rss
