"""A node's own filesystem, as each kind node has its own.

Every node of ovnkube-local shares the machine's one filesystem, so a
hostPath volume such as /var/run/openvswitch or /etc/cni/net.d would be the
same directory on every node (and the machine's own). Each node's kubelet,
CRI runtime, CNI plugins and containers therefore run in a mount namespace of
the node's where /etc, /opt, /var and /run are overlays: the host's files
below, the node's writes in `<node dir>/fs`. Paths then mean the same to the
kubelet, the runtime, a container and a CNI plugin, as on a real node.

/run/netns is the exception: it stays the host's mount (moved back over the
overlay, still a peer of the host's), so network namespaces made on a node
are seen by the host and every other node, and the other way round.

The namespace is pinned on a file (`unshare --mount=FILE`), entered with
setns (localcluster.nsexec --mount FILE) and gone when the file is unmounted
and its last process has exited (`ovnkube-local down`).

    python -m localcluster.nodefs setup FS_DIR   (run by `create`, inside)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OVERLAID = ("/etc", "/opt", "/var", "/run")
NETNS_DIR = "/run/netns"
ROOT = Path(__file__).resolve().parent.parent


def _mount(*args: str) -> None:
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise OSError(f"mount {' '.join(args)}: {res.stderr.strip() or res.returncode}")


def is_mountpoint(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def upper_dir(fs_dir: Path, path: str) -> Path:
    """Where the node's own files under `path` (one of OVERLAID) are kept."""
    return fs_dir / path.strip("/") / "upper"


def _top(path: str) -> str | None:
    p = Path(path)
    return next((t for t in OVERLAID if p == Path(t) or Path(t) in p.parents), None)


def overlaid(path: str) -> bool:
    """Whether a node's `path` is its own (not the host's)."""
    return _top(path) is not None


def node_path(fs_dir: Path, path: str) -> Path:
    """The host's name for a file the node wrote at `path`, if it wrote one
    (files the node only reads are the host's own)."""
    top = _top(path)
    return Path(path) if top is None else upper_dir(fs_dir, top) / Path(path).relative_to(top)


def create(pin_dir: Path, node: str, fs_dir: Path) -> Path:
    """Make the node's mount namespace; return the file it is pinned on."""
    if not is_mountpoint(Path(NETNS_DIR)):
        raise RuntimeError(f"{NETNS_DIR} is not a mount (no network namespace made yet)")
    pin_dir.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(pin_dir):
        # unshare pins a namespace only on a file of a private mount
        _mount("--bind", str(pin_dir), str(pin_dir))
        _mount("--make-private", str(pin_dir))
    pin = pin_dir / node
    pin.touch()
    # Propagation unchanged: /run/netns stays in the host's peer group.
    res = subprocess.run(["unshare", f"--mount={pin}", "--propagation", "unchanged",
                          sys.executable, "-m", "localcluster.nodefs", "setup", str(fs_dir)],
                         capture_output=True, text=True, env={**os.environ,
                                                              "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        subprocess.run(["umount", str(pin)], capture_output=True)
        raise OSError(f"node {node}: its mount namespace: {res.stderr.strip()}")
    return pin


def setup(fs_dir: Path) -> None:
    """Inside the new namespace: the overlays, and /run/netns moved back over."""
    # Nothing mounted here may reach the host's namespace.
    _mount("--make-private", "/")
    hold = fs_dir / "netns-hold"
    hold.mkdir(parents=True, exist_ok=True)
    _mount("--move", NETNS_DIR, str(hold))
    for top in OVERLAID:
        upper, work = upper_dir(fs_dir, top), fs_dir / top.strip("/") / "work"
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir={top},upperdir={upper},workdir={work}", top)
    Path(NETNS_DIR).mkdir(parents=True, exist_ok=True)
    _mount("--move", str(hold), NETNS_DIR)


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "setup":
        sys.exit("usage: python -m localcluster.nodefs setup FS_DIR")
    try:
        setup(Path(sys.argv[2]))
    except OSError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
