"""Tearing a node's runtime down for good (`ovnkube-local down`): containers
outlive the runtime by design, so they are killed here by their records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path


def kill_containers(state_dir: Path) -> int:
    """SIGKILL every container process group and shim the runtime recorded."""
    n = 0
    for f in (state_dir / "containers").glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            rec = json.loads(f.read_text())
            try:
                st = json.loads((Path(rec["run_dir"]) / "status.json").read_text())
            except (OSError, ValueError):
                st = {}
            for pid, group in ((int(st.get("pid") or 0), True),
                               (int(rec.get("shim_pid") or 0), False)):
                if pid > 0:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
                        n += 1
    return n


MOUNTPOINTS = "created-mountpoints"


def remember_mountpoints(state_dir: Path, status_file: Path) -> None:
    """Keep the host paths a shim created, beyond its container's removal."""
    try:
        created = json.loads(status_file.read_text()).get("created_mountpoints") or []
    except (OSError, ValueError):
        return
    if created:
        with open(state_dir / MOUNTPOINTS, "a") as f:
            f.write("".join(f"{p}\n" for p in created))


def created_mountpoints(state_dir: Path) -> set[str]:
    """Host paths the shims had to create as mount points."""
    out: set[str] = set()
    with contextlib.suppress(OSError):
        out.update(p for p in (state_dir / MOUNTPOINTS).read_text().splitlines() if p)
    for st in (state_dir / "container-files").glob("*/status.json"):
        with contextlib.suppress(OSError, ValueError):
            out.update(json.loads(st.read_text()).get("created_mountpoints") or [])
    return out


def remove_mountpoints(paths: set[str]) -> None:
    """Remove created mount points that are still empty, deepest first."""
    for p in sorted(paths, key=len, reverse=True):
        for dirpath, _dirs, files in os.walk(p, topdown=False):
            for f in files:
                fp = os.path.join(dirpath, f)
                with contextlib.suppress(OSError):
                    if os.path.getsize(fp) == 0:
                        os.unlink(fp)
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        with contextlib.suppress(OSError):
            if os.path.isfile(p) and os.path.getsize(p) == 0:
                os.unlink(p)
