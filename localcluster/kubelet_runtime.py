"""The netns-kubelet's container runtime: containers are processes started in the
pod's network namespace, each under a tiny `sh` shim that records the exit code
in a file (so a restarted kubelet can still learn how an adopted container
ended); probes connect from inside the pod's namespace; sandbox state is kept
on disk."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from localcluster.images import Image, ImageError, argv_for, load_map
from localcluster.netns import enter_netns

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# The shim: forward nothing, ignore TERM/INT itself (the whole process group is
# signalled, so the container gets them), write the container's status.
SHIM = 'f=$1; shift; trap : TERM INT; "$@"; echo $? > "$f"'

# --- sockets inside a network namespace ----------------------------------------

def netns_socket(netns: str | None, family: int, sock_type: int) -> socket.socket:
    """A socket created in network namespace `netns` (None: ours). A short-lived
    thread switches its own namespace (setns is per thread) and makes it; the
    socket stays in that namespace whichever thread uses it."""
    if not netns:
        return socket.socket(family, sock_type)
    out: list[socket.socket] = []
    err: list[BaseException] = []

    def make() -> None:
        try:
            enter_netns(netns)
            out.append(socket.socket(family, sock_type))
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=make, name=f"setns-{netns}", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_connect(netns: str | None, host: str, port: int, timeout: float) -> socket.socket:
    s = netns_socket(netns, _family(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


class _NetnsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, netns: str | None, host: str, port: int, timeout: float,
                 tls: bool = False) -> None:
        super().__init__(host, port, timeout=timeout)
        self._netns = netns
        self._tls = tls

    def connect(self) -> None:
        s = tcp_connect(self._netns, self.host, self.port, float(self.timeout or 1))
        if self._tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s, server_hostname=self.host)
        self.sock = s


def http_get(netns: str | None, host: str, port: int, path: str, timeout: float,
             headers: dict[str, str] | None = None, tls: bool = False) -> tuple[int, bytes]:
    conn = _NetnsHTTPConnection(netns, host, port, timeout, tls)
    try:
        conn.request("GET", path or "/", headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(10240)
    finally:
        conn.close()


# --- process helpers ----------------------------------------------------------

def proc_starttime(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclasses.dataclass
class ContainerProc:
    """One run of a container: the shim's pid (which leads its process group)."""

    pid: int
    starttime: int
    started_at: str
    exit_file: str
    log_path: str
    container_id: str
    popen: subprocess.Popen[bytes] | None = dataclasses.field(default=None, repr=False)
    # The exit status when known for sure (also set when the start failed).
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "popen"}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContainerProc:
        return cls(**{k: v for k, v in d.items() if k in
                      {f.name for f in dataclasses.fields(cls)} - {"popen"}})

    def alive(self) -> bool:
        if self.exit_code is not None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        return proc_starttime(self.pid) == self.starttime

    def result(self) -> int:
        """The container's exit status once it is no longer alive."""
        if self.exit_code is not None:
            return self.exit_code
        try:
            code = int(Path(self.exit_file).read_text().strip())
        except (OSError, ValueError):
            # The shim itself died: SIGKILL (the grace period ran out) or it was
            # killed while we were not its parent.
            if self.popen is not None and self.popen.returncode is not None \
                    and self.popen.returncode < 0:
                code = 128 - self.popen.returncode
            else:
                code = 137
        self.exit_code = code
        return code

    def signal_group(self, sig: int) -> None:
        if self.exit_code is not None:
            return
        if self.popen is None and proc_starttime(self.pid) != self.starttime:
            return  # not ours any more (pid reuse)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit status."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                self.signal_group(signal.SIGKILL)
                deadline = time.monotonic() + 5
                while self.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
        # Whatever the shim left in its group (daemonized children) goes too.
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(1)
        return self.result()


class StartError(Exception):
    """The container could not be started; reason and message for its status."""

    def __init__(self, reason: str, message: str, exit_code: int | None = 128) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code  # None: waiting (never ran), else terminated


def image_id(image: str, argv0: str) -> str:
    return "sha256:" + hashlib.sha256(f"{image}\0{argv0}".encode()).hexdigest()


def agnhost_argv(python: str) -> list[str]:
    return [python, "-m", "localcluster.agnhost"]


def container_argv(spec: dict[str, Any], python: str,
                   images: Mapping[str, Image] | None = None) -> list[str]:
    """What to run for a container, by the image map (localcluster/images.py):
    its command and args with the image's entrypoint and cmd, as Kubernetes
    combines them. An image the map does not know cannot be pulled."""
    try:
        return argv_for(str(spec.get("image") or ""), list(spec.get("command") or []),
                        list(spec.get("args") or []), python,
                        load_map() if images is None else images)
    except ImageError as e:
        raise StartError("ErrImagePull", str(e), exit_code=None) from None


_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z0-9]+)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes; unknown references stay)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, value)


def start_container(argv: list[str], env: dict[str, str], netns: str | None,
                    workdir: str | None, run_dir: Path, log_path: Path) -> ContainerProc:
    """Start argv (host binaries) in `netns` under the exit-code shim."""
    exe = argv[0]
    path_env = env.get("PATH", os.environ.get("PATH", ""))
    resolved = exe if "/" in exe else shutil.which(exe, path=path_env)
    if not resolved or not os.access(resolved, os.X_OK):
        raise StartError("StartError", f'exec: "{exe}": executable file not found in $PATH'
                         if "/" not in exe else f'exec: "{exe}": no such file or directory')
    if workdir and not os.path.isdir(workdir):
        raise StartError("StartError", f"working directory {workdir!r} does not exist here "
                         "(containers run on the host's filesystem)")
    cid = secrets.token_hex(32)
    run_dir.mkdir(parents=True, exist_ok=True)
    exit_file = run_dir / f"{cid[:12]}.exit"
    full = ["sh", "-c", SHIM, "sh", str(exit_file), resolved, *argv[1:]]
    if netns:
        full = ["ip", "netns", "exec", netns, *full]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, cwd=workdir or "/",
                             start_new_session=True)
    st = proc_starttime(p.pid)
    return ContainerProc(p.pid, st or 0, now_rfc3339(), str(exit_file), str(log_path),
                         cid, popen=p)


def run_exec(argv: list[str], env: dict[str, str], netns: str | None, timeout: float
             ) -> tuple[int, str]:
    """An exec probe: run argv in `netns`; (exit status, output)."""
    full = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    try:
        res = subprocess.run(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, timeout=timeout, check=False,
                             start_new_session=True)
    except subprocess.TimeoutExpired:
        return -1, f"command {argv!r} timed out after {timeout:g}s"
    except OSError as e:
        return -1, str(e)
    return res.returncode, res.stdout.decode(errors="replace")[-1024:]


# --- probes -------------------------------------------------------------------

def _named_port(port: Any, container: dict[str, Any]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} is not a number nor a named port of the container")


@dataclasses.dataclass
class ProbeState:
    kind: str  # readiness, liveness, startup
    spec: dict[str, Any]
    started: float  # monotonic time the container started
    successes: int = 0
    failures: int = 0
    result: bool | None = None  # None: not decided yet
    next_due: float = 0.0
    last_message: str = ""

    def __post_init__(self) -> None:
        self.next_due = self.started + float(self.spec.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds") or 1)

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)

    def record(self, ok: bool, message: str, now: float) -> bool | None:
        """Count one probe outcome; returns the new result when it flips."""
        self.next_due = now + self.period
        self.last_message = message
        if ok:
            self.successes += 1
            self.failures = 0
            if self.result is not True and self.successes >= self.success_threshold:
                self.result = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.result is not False and self.failures >= self.failure_threshold:
                self.result = False
                return False
        return None


def run_probe(spec: dict[str, Any], container: dict[str, Any], netns: str | None,
              pod_ip: str, env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """One probe attempt from inside the pod's namespace: (success, message)."""
    try:
        if "httpGet" in spec:
            h = spec["httpGet"]
            host = h.get("host") or pod_ip
            port = _named_port(h.get("port"), container)
            headers = {"User-Agent": "kube-probe/1.33", "Accept": "*/*"}
            for hh in h.get("httpHeaders") or []:
                headers[hh["name"]] = hh.get("value", "")
            status, _ = http_get(netns, host, port, h.get("path") or "/", timeout,
                                    headers, tls=str(h.get("scheme", "")).upper() == "HTTPS")
            if 200 <= status < 400:
                return True, ""
            return False, (f"HTTP probe failed with statuscode: {status}")
        if "tcpSocket" in spec:
            t = spec["tcpSocket"]
            host = t.get("host") or pod_ip
            port = _named_port(t.get("port"), container)
            tcp_connect(netns, host, port, timeout).close()
            return True, ""
        if "exec" in spec:
            cmd = list((spec["exec"] or {}).get("command") or [])
            if not cmd:
                return False, "exec probe has no command"
            code, out = run_exec(cmd, env, netns, timeout)
            if code == 0:
                return True, ""
            return False, f"command {cmd!r} exited with {code}: {out.strip()}"
        if "grpc" in spec:
            return False, "grpc probes are not supported by the netns-kubelet"
        return False, "probe has no handler (httpGet, tcpSocket or exec)"
    except TimeoutError:
        return False, f"probe timed out after {timeout:g}s"
    except (OSError, ValueError, http.client.HTTPException) as e:
        return False, str(e) or type(e).__name__


# --- saved state --------------------------------------------------------------

def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def python_executable() -> str:
    return sys.executable
