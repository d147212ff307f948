"""Start, watch and stop the daemons a local cluster or a test bed is made of.

Every daemon runs in the foreground as our child (never `--detach`), so its pid
is known and it can always be stopped, also when the caller fails half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class DaemonError(RuntimeError):
    """A daemon did not start or died; the message carries its log tail."""


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Daemon:
    name: str
    argv: list[str]
    log_path: Path
    netns: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        argv = list(self.argv)
        if self.netns:
            # `ip netns exec` execs the command in place: the pid stays ours.
            argv = ["ip", "netns", "exec", self.netns, *argv]
        env = {**os.environ, **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,
            )
        log.debug("started %s pid %d: %s", self.name, self.proc.pid, " ".join(argv))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise DaemonError(
                f"{self.name} exited with status {code}; last log lines:\n{log_tail(self.log_path)}"
            )

    def wait_until(self, ready: Callable[[], bool], timeout: float = 30.0,
                   what: str = "ready") -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if ready():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"{self.name} not {what} after {timeout:.0f}s; last log lines:\n"
                    f"{log_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The daemon leads its own session: signal the whole group so helper
        # children (ovsdb-server's, kubectl's) go with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class DaemonSet:
    """Daemons started together and stopped in reverse order, whatever happens."""

    def __init__(self) -> None:
        self.daemons: list[Daemon] = []

    def start(self, daemon: Daemon) -> Daemon:
        self.daemons.append(daemon)
        return daemon.start()

    def stop(self) -> None:
        errors: list[BaseException] = []
        for d in reversed(self.daemons):
            try:
                d.stop()
            except BaseException as e:  # keep stopping the rest
                errors.append(e)
        self.daemons.clear()
        if errors:
            raise errors[0]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status if `pid` is our child, so no zombie stays."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(p))
    return out


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop a daemon by its process group, whether this process or an earlier
    one started it; return once no process of the group is left (a leader
    that exits before its children, or children still writing their
    databases, would otherwise outlive `down`)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            _reap(pid)
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                _reap(pid)
                if not group_alive(pid):
                    return
            time.sleep(0.05)


def run(argv: Sequence[str], netns: str | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 60.0, input: str | None = None) -> str:
    """Run a short command (in a netns if given) and return its stdout."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    res = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})}, input=input)
    if check and res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, full, res.stdout, res.stderr)
    return res.stdout


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def path_exists(path: Path) -> Callable[[], bool]:
    return path.exists


def tcp_open(host: str, port: int, netns: str | None = None) -> Callable[[], bool]:
    def probe() -> bool:
        if netns:
            return subprocess.run(
                ["ip", "netns", "exec", netns, "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"],
                capture_output=True, timeout=5,
            ).returncode == 0
        with socket.create_connection((host, port), timeout=1):
            return True
    return probe
