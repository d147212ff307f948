"""What the CRI runtime knows about its sandboxes and containers, kept on disk
(one JSON file each) so a restarted runtime carries on where it stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from localcluster.cri.gen import api_pb2 as pb


@dataclasses.dataclass
class SandboxRecord:
    id: str
    name: str
    namespace: str
    uid: str
    attempt: int
    created_ns: int
    hostname: str
    log_directory: str
    labels: dict[str, str]
    annotations: dict[str, str]
    runtime_handler: str = ""
    netns: str | None = None  # None: the node's network (hostNetwork)
    ips: list[str] = dataclasses.field(default_factory=list)
    network: dict[str, Any] | None = None  # the CNI network ADD used (for DEL)
    cni_result: dict[str, Any] | None = None
    cni_runtime_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    ready: bool = True
    # Being set up (RunPodSandbox has not returned): kept on disk so nothing
    # leaks, hidden from List/Status as containerd does. Shown half-made, the
    # kubelet's PLEG cached a READY sandbox with no IP and never looked again.
    setting_up: bool = False
    resolv_conf: str = ""  # path of the pod's resolv.conf ("" keeps the node's)

    def metadata(self) -> pb.PodSandboxMetadata:
        return pb.PodSandboxMetadata(name=self.name, uid=self.uid, namespace=self.namespace,
                                     attempt=self.attempt)

    @property
    def state(self) -> pb.PodSandboxState:
        return pb.SANDBOX_READY if self.ready else pb.SANDBOX_NOTREADY


@dataclasses.dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    attempt: int
    image: str  # the reference the kubelet asked for
    image_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    mounts: list[dict[str, Any]]
    log_path: str  # absolute
    labels: dict[str, str]
    annotations: dict[str, str]
    created_ns: int
    run_dir: str
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    attach_socket: str = ""
    # Filled once started, from the shim's status file.
    shim_pid: int = 0
    pid: int = 0
    started_ns: int = 0
    finished_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""

    def metadata(self) -> pb.ContainerMetadata:
        return pb.ContainerMetadata(name=self.name, attempt=self.attempt)

    @property
    def status_file(self) -> Path:
        return Path(self.run_dir) / "status.json"

    def refresh(self) -> None:
        """Learn from the shim's status file how far the container got."""
        if not self.started_ns and not self.shim_pid:
            return
        try:
            st = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            st = {}
        self.pid = int(st.get("pid") or self.pid)
        self.started_ns = int(st.get("started_ns") or self.started_ns)
        if "exit_code" in st and not self.finished_ns:
            self.exit_code = int(st["exit_code"])
            self.finished_ns = int(st.get("finished_ns") or time.time_ns())
            self.reason = str(st.get("reason") or "")
            self.message = str(st.get("message") or "")
        elif self.started_ns and not self.finished_ns and not _alive(self.shim_pid):
            # The shim was killed before it could say how the container ended.
            self.exit_code, self.finished_ns, self.reason = 137, time.time_ns(), "Error"
            self.message = "the container's shim disappeared"

    @property
    def state(self) -> pb.ContainerState:
        self.refresh()
        if self.finished_ns:
            return pb.CONTAINER_EXITED
        if self.started_ns:
            return pb.CONTAINER_RUNNING
        return pb.CONTAINER_CREATED

    def signal(self, sig: int) -> None:
        if self.pid and self.state == pb.CONTAINER_RUNNING:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float) -> None:
        """SIGTERM to the container's process group, SIGKILL after `timeout`."""
        if self.state != pb.CONTAINER_RUNNING:
            return
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.state == pb.CONTAINER_RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while self.state == pb.CONTAINER_RUNNING and time.monotonic() < deadline:
            self.signal(signal.SIGKILL)
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


class Store:
    """Sandboxes and containers by id, each saved as state_dir/<kind>/<id>.json."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.lock = threading.RLock()
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        tables: tuple[tuple[str, Any, dict[str, Any]], ...] = (
            ("sandboxes", SandboxRecord, self.sandboxes),
            ("containers", ContainerRecord, self.containers))
        for kind, cls, table in tables:
            (state_dir / kind).mkdir(parents=True, exist_ok=True)
            for f in (state_dir / kind).glob("*.json"):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    rec = cls(**json.loads(f.read_text()))
                    if isinstance(rec, SandboxRecord) and rec.setting_up:
                        # the runtime died during its set-up: the kubelet stops
                        # and removes a NOTREADY sandbox, with a CNI DEL
                        rec.setting_up, rec.ready = False, False
                    if isinstance(rec, SandboxRecord) and rec.netns and not Path(
                            f"/run/netns/{rec.netns}").exists():
                        # its network namespace is gone (the node restarted):
                        # NOTREADY, so the kubelet makes the pod a new sandbox
                        rec.ready = False
                    table[rec.id] = rec

    def _path(self, rec: SandboxRecord | ContainerRecord) -> Path:
        kind = "sandboxes" if isinstance(rec, SandboxRecord) else "containers"
        return self.dir / kind / f"{rec.id}.json"

    def save(self, rec: SandboxRecord | ContainerRecord) -> None:
        with self.lock:
            if isinstance(rec, SandboxRecord):
                self.sandboxes[rec.id] = rec
            else:
                self.containers[rec.id] = rec
            p = self._path(rec)
            tmp = p.with_suffix(".tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(rec)))
            os.replace(tmp, p)

    def forget(self, rec: SandboxRecord | ContainerRecord) -> None:
        with self.lock:
            if isinstance(rec, SandboxRecord):
                self.sandboxes.pop(rec.id, None)
            else:
                self.containers.pop(rec.id, None)
            self._path(rec).unlink(missing_ok=True)

    def listed_sandboxes(self) -> list[SandboxRecord]:
        """The sandboxes the kubelet may know of (set-up finished)."""
        with self.lock:
            return [sb for sb in self.sandboxes.values() if not sb.setting_up]

    def find(self, table: dict[str, Any], id_or_prefix: str) -> Any:
        """By full id or unique prefix, as crictl allows; None when unknown."""
        with self.lock:
            if id_or_prefix in table:
                return table[id_or_prefix]
            hits = [v for k, v in table.items() if id_or_prefix and k.startswith(id_or_prefix)]
            return hits[0] if len(hits) == 1 else None


def pod_netns(state_dir: Path, uid: str) -> str:
    """The network namespace of the ready sandbox of the pod with `uid`
    (`ovnkube-local exec`, tests); LookupError when there is none."""
    for f in (state_dir / "sandboxes").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, TypeError):
            sb = SandboxRecord(**json.loads(f.read_text()))
            if sb.uid == uid and sb.ready:
                if sb.netns is None:
                    raise LookupError(f"pod {sb.namespace}/{sb.name} uses the node's network "
                                      "(hostNetwork)")
                return sb.netns
    raise LookupError(f"pod with uid {uid} has no ready sandbox on this node")
