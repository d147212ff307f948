"""CRI stats of containers and sandboxes: CPU time and memory of each
container's process group, read from /proc."""

from __future__ import annotations

import os
import time

from localcluster.cri.gen import api_pb2 as pb
from localcluster.cri.records import ContainerRecord, SandboxRecord

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


def container_stats(rec: ContainerRecord) -> pb.ContainerStats:
    now = time.time_ns()
    cpu_ns, rss = group_usage(rec.pid) if rec.state == pb.CONTAINER_RUNNING else (0, 0)
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=rec.id, metadata=rec.metadata(),
                                          labels=rec.labels, annotations=rec.annotations),
        cpu=pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(value=cpu_ns)),
        memory=pb.MemoryUsage(timestamp=now, working_set_bytes=pb.UInt64Value(value=rss),
                              rss_bytes=pb.UInt64Value(value=rss),
                              usage_bytes=pb.UInt64Value(value=rss)),
        # Containers write to the host's filesystem: no layer of their own.
        writable_layer=pb.FilesystemUsage(
            timestamp=now, fs_id=pb.FilesystemIdentifier(mountpoint=rec.run_dir),
            used_bytes=pb.UInt64Value(value=0), inodes_used=pb.UInt64Value(value=0)))


def sandbox_stats(sb: SandboxRecord, containers: list[ContainerRecord]) -> pb.PodSandboxStats:
    ctrs = [container_stats(r) for r in containers if r.state == pb.CONTAINER_RUNNING]
    now = time.time_ns()
    cpu = sum(c.cpu.usage_core_nano_seconds.value for c in ctrs)
    mem = sum(c.memory.working_set_bytes.value for c in ctrs)
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(id=sb.id, metadata=sb.metadata(),
                                           labels=sb.labels, annotations=sb.annotations),
        linux=pb.LinuxPodSandboxStats(
            cpu=pb.CpuUsage(timestamp=now, usage_core_nano_seconds=pb.UInt64Value(value=cpu)),
            memory=pb.MemoryUsage(timestamp=now, working_set_bytes=pb.UInt64Value(value=mem)),
            containers=ctrs))
