"""The per-container shim of the CRI runtime (what conmon or
containerd-shim is to theirs): it enters the pod's network namespace, makes
the container's own mount and UTS namespaces (the kubelet's volume mounts
bound at their container paths, the pod's hostname), starts the process,
writes its output to the CRI log file and records how it ended.

    python -m localcluster.cri.shim SPEC.json

SPEC: argv, env, cwd, netns (a name under /run/netns, or null), hostname,
mounts [{host_path, container_path, readonly}], log_path, status_path, and
for attachable containers stdin, stdin_once, tty and attach_socket
(localcluster/cri/attach.py).
The status file holds {"pid", "started_ns"} once started, then "exit_code",
"finished_ns" and "reason". The shim outlives the runtime that started it, so
a restarted runtime still learns how its containers ended. SIGUSR1 reopens
the log (the kubelet's rotation); the container's process group, not the
shim, is what the runtime signals.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import fcntl
import json
import os
import pty
import selectors
import signal
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Any, BinaryIO

from localcluster.cri.attach import AttachHub

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_SLAVE = 1, 32, 4096, 16384, 1 << 19
MAX_LINE = 16 * 1024  # a longer line is split into partial (P) entries, as CRI-O does

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src: str, dst: str, flags: int) -> None:
    _check(_libc.mount(src.encode(), dst.encode(), None, flags, None), f"mount {src} on {dst}")


def _outermost_missing(path: str) -> str:
    while not os.path.exists(os.path.dirname(path)):
        path = os.path.dirname(path)
    return path


def enter_namespaces(spec: dict[str, Any]) -> list[str]:
    """Join the pod's netns and make this container's mount and UTS namespaces;
    returns the mount points it had to create on the host's filesystem."""
    if spec.get("netns"):
        fd = os.open(f"/run/netns/{spec['netns']}", os.O_RDONLY)
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {spec['netns']}")
        os.close(fd)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    # Slaves, as runc's default rootfs propagation: nothing mounted here reaches
    # the node, and what the node mounts later (a pod's network namespace in
    # /run/netns, for a CNI server with mountPropagation: HostToContainer)
    # reaches the container. Binds of a slave are slaves of the same master.
    _mount("none", "/", MS_REC | MS_SLAVE)
    host = str(spec.get("hostname") or "")
    if host:
        _check(_libc.sethostname(host.encode(), len(host.encode())), "sethostname")
    created: list[str] = []
    for m in spec.get("mounts") or []:
        src, dst = m["host_path"], m["container_path"]
        if not os.path.exists(src):
            # containerd's CRI makes a missing host path (a hostPath volume
            # without a type) a directory
            created.append(_outermost_missing(src))
            os.makedirs(src, exist_ok=True)
        if not os.path.exists(dst):
            # Processes share the host's filesystem: the mount point must exist
            # there (empty), though what is mounted on it is ours alone.
            missing = _outermost_missing(dst)
            if os.path.isdir(src):
                os.makedirs(dst, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                Path(dst).touch()
            created.append(missing)
        _mount(src, dst, MS_BIND | MS_REC)
        if m.get("readonly"):
            _mount(src, dst, MS_BIND | MS_REMOUNT | MS_RDONLY)
    return created


class CriLog:
    """Lines in the CRI log format: `<RFC3339Nano> <stream> <F|P> <text>`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.f: BinaryIO = open(path, "ab")  # noqa: SIM115 (reopened on rotation)

    def reopen(self) -> None:
        self.f.close()
        self.f = open(self.path, "ab")  # noqa: SIM115

    def _entry(self, stream: str, tag: str, text: bytes) -> None:
        ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
        self.f.write(f"{ts} {stream} {tag} ".encode() + text + b"\n")

    def write(self, stream: str, data: bytes) -> None:
        buf = data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            while len(line) > MAX_LINE:
                self._entry(stream, "P", line[:MAX_LINE])
                line = line[MAX_LINE:]
            self._entry(stream, "F", line)
        # What is left has no newline yet: written now as a partial entry (as
        # conmon does), so a prompt or a progress line shows up in `kubectl logs`.
        for i in range(0, len(buf), MAX_LINE):
            self._entry(stream, "P", buf[i:i + MAX_LINE])
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def write_status(path: str, status: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def _child_io(spec: dict[str, Any]) -> tuple[list[int], dict[int, str], int]:
    """(the container's fds 0-2, our read ends by stream, our stdin write end
    or the terminal's master side: -1 without stdin)."""
    if spec.get("tty"):
        master, slave = pty.openpty()
        return [slave, slave, slave], {master: "stdout"}, master
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if spec.get("stdin"):
        in_r, in_w = os.pipe()
    else:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY), -1
    return [in_r, out_w, err_w], {out_r: "stdout", err_r: "stderr"}, in_w


def _start(spec: dict[str, Any], child_fds: list[int]) -> int:
    pid = os.fork()
    if pid == 0:  # the container
        try:
            os.setsid()
            for i, fd in enumerate(child_fds):
                os.dup2(fd, i)
            if spec.get("tty"):
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            os.chdir(spec.get("cwd") or "/")
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
        except OSError as e:
            os.write(2, f"exec {spec['argv'][0]}: {e}\n".encode())
        os._exit(127)
    for fd in set(child_fds):
        os.close(fd)
    return pid


def run(spec: dict[str, Any]) -> int:
    status: dict[str, Any] = {}
    try:
        status["created_mountpoints"] = enter_namespaces(spec)
        child_fds, readers, stdin_fd = _child_io(spec)
        pid = _start(spec, child_fds)
    except OSError as e:
        status.update(exit_code=128, reason="StartError", message=str(e),
                      finished_ns=time.time_ns())
        write_status(spec["status_path"], status)
        return 1
    tty_fd = stdin_fd if spec.get("tty") else -1

    def resize(h: int, w: int) -> None:
        if tty_fd >= 0:
            with contextlib.suppress(OSError):
                fcntl.ioctl(tty_fd, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
    hub = AttachHub(spec["attach_socket"], stdin_fd, tty_fd, bool(spec.get("stdin_once")),
                    resize) if spec.get("attach_socket") else None
    status.update(pid=pid, started_ns=time.time_ns())
    write_status(spec["status_path"], status)
    log = CriLog(spec["log_path"])
    signal.signal(signal.SIGUSR1, lambda *_: log.reopen())
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the runtime signals the group
    sel = selectors.DefaultSelector()
    for fd, stream in readers.items():
        sel.register(fd, selectors.EVENT_READ, stream)
    if hub is not None:
        sel.register(hub.listener, selectors.EVENT_READ, "attach")
    open_fds, wstatus, drain_until = len(readers), None, 0.0
    # Output is read until its fds close, or for a moment after the process
    # ended when something it left behind still holds them.
    while open_fds and (wstatus is None or time.monotonic() < drain_until):
        for key, _ in sel.select(0.5):
            if key.data == "attach" and hub is not None:
                sel.register(hub.accept(), selectors.EVENT_READ, "client")
                continue
            fd = int(key.fd)
            if key.data == "client" and hub is not None:
                if not hub.from_client(fd):
                    sel.unregister(fd)
                continue
            try:
                data = os.read(fd, 65536)
            except InterruptedError:
                continue
            except OSError:  # EIO: the terminal's last holder is gone
                data = b""
            if data:
                log.write(str(key.data), data)
                if hub is not None:
                    hub.output(str(key.data), data)
            else:
                sel.unregister(fd)
                os.close(fd)
                open_fds -= 1
        if wstatus is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                wstatus, drain_until = st, time.monotonic() + 1.0
    if wstatus is None:
        _, wstatus = os.waitpid(pid, 0)
    if hub is not None:
        hub.close()
    log.close()
    signalled = os.WIFSIGNALED(wstatus)
    code = 128 + os.WTERMSIG(wstatus) if signalled else os.WEXITSTATUS(wstatus)
    status.update(exit_code=code, finished_ns=time.time_ns(),
                  reason="Completed" if code == 0 else "Error")
    write_status(spec["status_path"], status)
    return 0


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run(spec))


if __name__ == "__main__":
    main()
