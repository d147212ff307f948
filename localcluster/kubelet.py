"""The netns-kubelet: a minimal but real kubelet for one node of a local cluster.

It registers its Node and keeps the node Lease renewed, watches the pods bound
to the node, and for each one creates a network namespace, runs the CNI ADD
through the installed network config exactly as kubelet's runtime does, starts
the containers as host processes inside that namespace, runs their probes,
restarts them per restartPolicy, reports the pod status, and on deletion stops
them, runs CNI DEL, removes the namespace and deletes the pod object.

    python -m localcluster.kubelet --node-name N --kubeconfig K --cni-conf-dir D \
        --cni-bin-dir B --pod-netns-prefix P --state-dir S [--node-ip IP] \
        [--node-netns NS] [--keep-pods] [--node-labels k=v,...]

Images cannot be pulled here: a container runs its `command`/`args` as host
binaries; the agnhost e2e image runs our localcluster.agnhost, a pause image
runs `agnhost pause`, and anything else without a command waits with
ErrImagePull. Volumes, resources, security contexts and lifecycle hooks are
ignored (the processes share the host's filesystem and users).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from tenacity import (
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from localcluster.kubelet_cni import (
    CniError,
    CniNetwork,
    CniRuntime,
    NoNetworkConfig,
    cni_args,
    load_network,
    result_ips,
)
from localcluster.kubelet_runtime import (
    REPO_ROOT,
    ContainerProc,
    ProbeState,
    StartError,
    agnhost_argv,
    container_argv,
    expand,
    image_id,
    now_rfc3339,
    read_json,
    run_probe,
    start_container,
    write_json,
)
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, ResourceAPI, api_client, node_path, pod_path, request

log = logging.getLogger(__name__)

KUBELET_VERSION = os.environ.get("KUBE_VERSION", "v1.33.13")
LEASE_NAMESPACE = "kube-node-lease"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TERMINAL = ("Succeeded", "Failed")
API_ERRORS = (k8s.ApiException, urllib3.exceptions.HTTPError, OSError)
OUR_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready",
                  "PodScheduled")


@dataclasses.dataclass
class KubeletConfig:
    node_name: str
    kubeconfig: str
    cni_conf_dir: Path
    cni_bin_dirs: list[Path]
    pod_netns_prefix: str
    state_dir: Path
    node_ip: str | None = None
    # The node's network namespace when the kubelet itself runs outside it:
    # CNI plugins and hostNetwork pods then run there.
    node_netns: str | None = None
    keep_pods: bool = False
    node_labels: dict[str, str] = dataclasses.field(default_factory=dict)
    python: str = sys.executable  # runs our agnhost
    max_grace_period: float = 5.0  # caps terminationGracePeriodSeconds
    lease_duration: int = 40
    lease_renew_interval: float = 10.0
    node_status_interval: float = 10.0
    restart_backoff: float = 1.0  # first container restart delay, doubled up to the max
    restart_backoff_max: float = 30.0
    sandbox_backoff: float = 1.0  # first retry of a failed CNI ADD, doubled up to the max
    sandbox_backoff_max: float = 30.0
    cni_timeout: float = 240.0


def microtime() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def api_retry(timeout: float = 30.0) -> Retrying:
    """Retries for transient apiserver trouble (5xx, connection errors)."""
    def transient(e: BaseException) -> bool:
        if isinstance(e, k8s.ApiException):
            return e.status is None or e.status >= 500 or e.status == 429
        return isinstance(e, urllib3.exceptions.HTTPError | OSError)
    return Retrying(stop=stop_after_delay(timeout), wait=wait_exponential(0.2, max=3),
                    retry=retry_if_exception(transient), reraise=True)


def _status(e: BaseException) -> int | None:
    return e.status if isinstance(e, k8s.ApiException) else None


class _NodePods(ResourceAPI):
    """Pods bound to one node (field selector spec.nodeName)."""

    def __init__(self, api: k8s.ApiClient, node: str) -> None:
        super().__init__(api, "/api/v1/pods", "Pod")
        self.selector = f"spec.nodeName={node}"

    def _call(self, query: list[tuple[str, Any]], timeout: Any = None) -> Any:
        return super()._call([*query, ("fieldSelector", self.selector)], timeout)


def ip_netns(*args: str) -> None:
    subprocess.run(["ip", "netns", *args], check=True, capture_output=True, timeout=30)


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def create_pod_netns(name: str) -> None:
    if netns_exists(name):  # a leftover of ours (same pod uid): start afresh
        delete_pod_netns(name)
    ip_netns("add", name)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                   capture_output=True, timeout=30)


def delete_pod_netns(name: str) -> None:
    if netns_exists(name):
        res = subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        if res.returncode != 0 and netns_exists(name):
            raise OSError(f"ip netns del {name}: {res.stderr.decode(errors='replace')}")


def detect_node_ip(netns: str | None) -> str:
    argv = ["ip", "-j", "-4", "addr", "show", "scope", "global"]
    if netns:
        argv = ["ip", "-n", netns, *argv[1:]]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout
    for link in json.loads(out or b"[]"):
        for a in link.get("addr_info", []):
            if a.get("local"):
                return str(a["local"])
    raise ValueError(f"no --node-ip given and no global IPv4 address in "
                     f"{'namespace ' + netns if netns else 'this namespace'}")


# --- one container's state ------------------------------------------------------

@dataclasses.dataclass
class CState:
    name: str
    spec: dict[str, Any]
    init: bool = False
    proc: ContainerProc | None = None
    runs: int = 0
    last_term: dict[str, Any] | None = None  # the latest termination
    prev_term: dict[str, Any] | None = None  # the one before
    done: bool = False  # terminated and not to be restarted
    waiting: tuple[str, str] | None = None  # (reason, message) when not running
    image_id: str = ""
    next_start: float = 0.0
    backoff: float = 0.0
    started_mono: float = 0.0
    probes: dict[str, ProbeState] = dataclasses.field(default_factory=dict)
    ready_hint: bool = False  # readiness carried over from before a kubelet restart

    @property
    def restart_count(self) -> int:
        return max(self.runs - 1, 0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    @property
    def started(self) -> bool:
        if not self.running:
            return False
        p = self.probes.get("startup")
        return p is None or p.result is True

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        p = self.probes.get("readiness")
        if p is None:
            return True
        return p.result is True or (p.result is None and self.ready_hint)

    @property
    def succeeded(self) -> bool:
        return self.done and (self.last_term or {}).get("exitCode") == 0

    def to_json(self) -> dict[str, Any]:
        return {"proc": self.proc.to_json() if self.proc else None, "runs": self.runs,
                "last_term": self.last_term, "prev_term": self.prev_term, "done": self.done,
                "image_id": self.image_id}

    def load(self, d: dict[str, Any]) -> None:
        self.proc = ContainerProc.from_json(d["proc"]) if d.get("proc") else None
        self.runs = int(d.get("runs", 0))
        self.last_term = d.get("last_term")
        self.prev_term = d.get("prev_term")
        self.done = bool(d.get("done"))
        self.image_id = str(d.get("image_id", ""))


@dataclasses.dataclass
class Sandbox:
    id: str
    netns: str | None  # None: hostNetwork
    network: dict[str, Any] | None = None  # the CniNetwork used for ADD (DEL uses it too)
    result: dict[str, Any] | None = None  # the final ADD result (prevResult for DEL)
    ips: list[str] = dataclasses.field(default_factory=list)


# --- a pod ----------------------------------------------------------------------

class PodWorker:
    """Everything the kubelet does for one pod, in one thread."""

    def __init__(self, kubelet: NetnsKubelet, pod: Obj, saved: dict[str, Any] | None = None,
                 orphan: bool = False) -> None:
        self.k = kubelet
        self.pod = pod
        md = pod["metadata"]
        self.uid: str = md["uid"]
        self.namespace: str = md["namespace"]
        self.name: str = md["name"]
        self.deleted = orphan
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.name}", daemon=True)
        self.sandbox: Sandbox | None = None
        self.sandbox_next_try = 0.0
        self.sandbox_backoff = 0.0
        self.network_error = ""
        self.terminal = ""  # the final phase, once the pod has finished
        self.start_time: str = (pod.get("status") or {}).get("startTime") or now_rfc3339()
        spec = pod.get("spec") or {}
        self.init = [CState(c["name"], c, init=True) for c in spec.get("initContainers") or []]
        self.containers = [CState(c["name"], c) for c in spec.get("containers") or []]
        self.dir = kubelet.pods_dir / f"{self.namespace}_{self.name}_{self.uid}"
        self.events_sent: dict[tuple[str, str], float] = {}
        if saved:
            self._load(saved)

    # --- plumbing -----------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def update(self, pod: Obj) -> None:
        with self.lock:
            try:
                newer = int(pod["metadata"]["resourceVersion"]) >= int(
                    self.pod["metadata"]["resourceVersion"])
            except (KeyError, ValueError):
                newer = True
            if newer:
                self.pod = pod
        self.wake.set()

    def mark_deleted(self) -> None:
        self.deleted = True
        self.wake.set()

    @property
    def all_containers(self) -> list[CState]:
        return [*self.init, *self.containers]

    @property
    def host_network(self) -> bool:
        return bool((self.pod.get("spec") or {}).get("hostNetwork"))

    def _save(self) -> None:
        if self.sandbox is None and not any(c.proc for c in self.all_containers):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "state.json").unlink()
            return
        write_json(self.dir / "state.json", {
            "uid": self.uid, "namespace": self.namespace, "name": self.name,
            "start_time": self.start_time, "terminal": self.terminal,
            "sandbox": dataclasses.asdict(self.sandbox) if self.sandbox else None,
            "containers": {c.name: c.to_json() for c in self.containers},
            "init": {c.name: c.to_json() for c in self.init},
        })

    def _load(self, saved: dict[str, Any]) -> None:
        self.start_time = saved.get("start_time") or self.start_time
        self.terminal = str(saved.get("terminal") or "")
        sb = saved.get("sandbox")
        if sb:
            self.sandbox = Sandbox(**sb)
        prior = {s.get("name"): s for s in
                 ((self.pod.get("status") or {}).get("containerStatuses") or [])}
        now = time.monotonic()
        for group, states in (("containers", self.containers), ("init", self.init)):
            known = {c.name for c in states}
            for name in (saved.get(group) or {}):
                if name not in known:  # an orphan: no spec, only what we ran
                    states.append(CState(name, {"name": name}, init=group == "init"))
            for c in states:
                d = (saved.get(group) or {}).get(c.name)
                if not d:
                    continue
                c.load(d)
                if c.proc and c.proc.alive():
                    c.started_mono = now
                    self._init_probes(c, now)
                    c.ready_hint = bool((prior.get(c.name) or {}).get("ready"))
        log.info("adopted pod %s/%s (sandbox %s)", self.namespace, self.name,
                 self.sandbox.netns if self.sandbox else None)

    def event(self, reason: str, message: str, type_: str = "Normal",
              every: float = 60.0) -> None:
        key = (reason, message)
        now = time.monotonic()
        if now - self.events_sent.get(key, -1e9) < every:
            return
        self.events_sent[key] = now
        self.k.post_event(self.pod, reason, message, type_)

    # --- the loop -----------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                if self.sync():
                    break
            except Exception:
                log.exception("pod %s/%s: sync failed", self.namespace, self.name)
                if self.k.stopping.is_set():
                    with contextlib.suppress(Exception):
                        if not self.k.config.keep_pods:
                            self.teardown(self.k.config.max_grace_period)
                    break
            self.wake.wait(self._next_wake())
            self.wake.clear()
        self.k.worker_done(self)

    def _next_wake(self) -> float:
        now = time.monotonic()
        due = [now + 0.5]
        for c in self.all_containers:
            due.extend(p.next_due for p in c.probes.values())
            if c.proc is None and not c.done and c.next_start > now:
                due.append(c.next_start)
        if self.sandbox is None and self.sandbox_next_try > now:
            due.append(self.sandbox_next_try)
        return max(0.05, min(due) - now)

    def sync(self) -> bool:
        """One pass; True when the worker is finished."""
        k = self.k
        if k.stopping.is_set():
            if not k.config.keep_pods:
                self.teardown(k.config.max_grace_period)
            return True
        pod = self.pod
        md = pod["metadata"]
        if self.deleted or md.get("deletionTimestamp"):
            grace = md.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self.teardown(min(float(grace or 0), k.config.max_grace_period))
            if not self.deleted:
                # The final status, as kubelet reports it: a terminal phase.
                self.terminal = self.terminal or (
                    "Succeeded" if self.containers and all(
                        (c.last_term or {}).get("exitCode") == 0 for c in self.containers)
                    else "Failed")
                self.report_status()
                k.delete_pod(self.namespace, self.name, self.uid)
            return True
        if self.terminal:
            return False  # finished: nothing runs any more; wait for the deletion
        if (pod.get("status") or {}).get("phase") in TERMINAL and self.sandbox is None \
                and not any(c.proc for c in self.all_containers):
            return False  # finished before a kubelet restart
        if self.sandbox is None and not self._ensure_sandbox():
            self.report_status()
            return False
        self._step_containers()
        self._probe()
        phase = self.phase()
        if phase in TERMINAL:
            self.terminal = phase
            self._stop_containers(k.config.max_grace_period)
            self._teardown_network()
            self._save()
        self.report_status()
        return False

    # --- sandbox ------------------------------------------------------------
    def _cni_env(self, sandbox: Sandbox) -> dict[str, str]:
        return {"CNI_CONTAINERID": sandbox.id, "CNI_NETNS": f"/run/netns/{sandbox.netns}",
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": cni_args(self.namespace, self.name, self.uid, sandbox.id)}

    def _runtime_config(self) -> dict[str, Any]:
        ports = []
        for c in (self.pod.get("spec") or {}).get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("hostPort"):
                    ports.append({"hostPort": p["hostPort"], "containerPort": p["containerPort"],
                                  "protocol": str(p.get("protocol", "TCP")).lower(),
                                  "hostIP": p.get("hostIP", "")})
        return {"portMappings": ports} if ports else {}

    def _ensure_sandbox(self) -> bool:
        now = time.monotonic()
        if now < self.sandbox_next_try:
            return False
        k = self.k
        sid = secrets.token_hex(32)
        if self.host_network:
            self.sandbox = Sandbox(sid, None, ips=[k.node_ip])
            self._save()
            return True
        try:
            net = load_network(k.config.cni_conf_dir)
        except NoNetworkConfig as e:
            self.network_error = (f"network is not ready: container runtime network not "
                                  f"ready: NetworkReady=false reason:NetworkPluginNotReady "
                                  f"message:Network plugin returns error: {e}")
            self._sandbox_failed("NetworkNotReady", self.network_error)
            return False
        netns = f"{k.config.pod_netns_prefix}{self.uid.replace('-', '')[:8]}"
        sandbox = Sandbox(sid, netns, network=net.to_json())
        try:
            create_pod_netns(netns)
        except (OSError, subprocess.SubprocessError) as e:
            self._sandbox_failed("FailedCreatePodSandBox",
                                 f"Failed to create pod sandbox: network namespace {netns}: {e}")
            return False
        self.sandbox = sandbox
        self._save()  # tracked before the ADD, so a crash cannot leak it
        env = self._cni_env(sandbox)
        try:
            if k.stopping.is_set():
                raise CniError("the kubelet is stopping")
            result = k.cni.add(net, env, self._runtime_config())
            ips = result_ips(result, "eth0")
            if not ips:
                raise CniError(f"the CNI result has no IP for eth0: {json.dumps(result)[:300]}")
        except (CniError, OSError) as e:
            plugin = e.plugin if isinstance(e, CniError) else ""
            msg = e.msg if isinstance(e, CniError) else str(e)
            # Clean up what the plugins may have done, as the runtime does.
            with contextlib.suppress(CniError, OSError):
                k.cni.delete(net, env, None, self._runtime_config())
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                delete_pod_netns(netns)
            self.sandbox = None
            self._save()
            self._sandbox_failed(
                "FailedCreatePodSandBox",
                f'Failed to create pod sandbox: failed to setup network for sandbox "{sid}": '
                f'plugin type="{plugin}" name="{net.name}" failed (add): {msg}')
            return False
        sandbox.result = result
        sandbox.ips = ips
        self.network_error = ""
        self.sandbox_backoff = 0.0
        self._save()
        log.info("pod %s/%s: sandbox %s ready, IPs %s", self.namespace, self.name, netns, ips)
        return True

    def _sandbox_failed(self, reason: str, message: str) -> None:
        cfg = self.k.config
        self.sandbox_backoff = min(max(self.sandbox_backoff * 2, cfg.sandbox_backoff),
                                   cfg.sandbox_backoff_max)
        self.sandbox_next_try = time.monotonic() + self.sandbox_backoff
        self.network_error = message
        log.warning("pod %s/%s: %s (retry in %.0fs)", self.namespace, self.name, message,
                    self.sandbox_backoff)
        self.event(reason, message, "Warning", every=0 if reason != "NetworkNotReady" else 30)

    def _teardown_network(self) -> None:
        sb = self.sandbox
        if sb is None:
            return
        if sb.netns:
            if sb.network:
                net = CniNetwork.from_json(sb.network)
                env = self._cni_env(sb)
                try:
                    for attempt in Retrying(stop=stop_after_attempt(3),
                                            wait=wait_exponential(0.3, max=2),
                                            retry=retry_if_exception_type((CniError, OSError)),
                                            reraise=True):
                        with attempt:
                            self.k.cni.delete(net, env, sb.result, self._runtime_config())
                except (CniError, OSError) as e:
                    msg = e.msg if isinstance(e, CniError) else str(e)
                    log.error("pod %s/%s: CNI DEL failed: %s", self.namespace, self.name, msg)
                    self.event("FailedKillPod", f'error killing pod: failed to destroy network '
                               f'for sandbox "{sb.id}": {msg}', "Warning", every=0)
            try:
                delete_pod_netns(sb.netns)
            except (OSError, subprocess.SubprocessError):
                log.exception("pod %s/%s: could not delete netns %s", self.namespace,
                              self.name, sb.netns)
        self.sandbox = None

    # --- containers ---------------------------------------------------------
    def _env(self, spec: dict[str, Any]) -> dict[str, str]:
        pod = self.pod
        md, pspec, st = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        host = (pspec.get("hostname") or self.name)[:63]
        ips = self.sandbox.ips if self.sandbox else []
        env: dict[str, str] = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOSTNAME": host}
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                  "metadata.uid": self.uid, "spec.nodeName": self.k.config.node_name,
                  "spec.serviceAccountName": pspec.get("serviceAccountName", ""),
                  "status.hostIP": self.k.node_ip, "status.hostIPs": self.k.node_ip,
                  "status.podIP": ips[0] if ips else st.get("podIP", ""),
                  "status.podIPs": ",".join(ips)}
        for e in spec.get("env") or []:
            name = e.get("name")
            if not name:
                continue
            if "valueFrom" in e:
                ref = (e["valueFrom"] or {}).get("fieldRef") or {}
                path = ref.get("fieldPath", "")
                if path in fields:
                    env[name] = fields[path]
                elif path.startswith("metadata.labels['") or path.startswith(
                        "metadata.annotations['"):
                    kind = "labels" if "labels" in path else "annotations"
                    env[name] = (md.get(kind) or {}).get(path.split("'")[1], "")
                else:
                    log.info("pod %s/%s: env %s: only value and fieldRef are supported",
                             self.namespace, self.name, name)
                continue
            env[name] = expand(str(e.get("value", "")), env)
        return env

    def _log_path(self, c: CState) -> Path:
        return self.dir / c.name / f"{c.runs}.log"

    def _start(self, c: CState, now: float) -> None:
        k = self.k
        try:
            argv = container_argv(c.spec, k.config.python)
        except StartError as e:  # no image to run: waiting, like an image pull failure
            c.waiting = (e.reason, e.message)
            self.event("Failed", f"Failed to pull image \"{c.spec.get('image')}\": {e.message}",
                       "Warning", every=120)
            return
        env = self._env(c.spec)
        if argv[:3] == agnhost_argv(k.config.python):
            env["PYTHONPATH"] = str(REPO_ROOT)
            env["PYTHONUNBUFFERED"] = "1"
        argv = [argv[0], *(expand(a, env) for a in argv[1:])]
        c.image_id = image_id(str(c.spec.get("image", "")), argv[0])
        c.waiting = None
        c.runs += 1
        netns = self.sandbox.netns if self.sandbox and self.sandbox.netns else (
            k.config.node_netns)
        try:
            c.proc = start_container(argv, env, netns, c.spec.get("workingDir"),
                                     self.dir / "run", self._log_path(c))
        except StartError as e:
            c.proc = ContainerProc(0, 0, now_rfc3339(), "", str(self._log_path(c)),
                                   secrets.token_hex(32), exit_code=e.exit_code or 128)
            c.waiting = (e.reason, e.message)
            self.event("Failed", f"Error: {e.message}", "Warning", every=120)
        else:
            self.event("Started", f"Started container {c.name}", every=0)
        c.started_mono = now
        self._init_probes(c, now)
        self._save()

    def _init_probes(self, c: CState, now: float) -> None:
        c.probes = {}
        if c.init:
            return
        for kind in ("startup", "readiness", "liveness"):
            spec = c.spec.get(f"{kind}Probe")
            if spec:
                c.probes[kind] = ProbeState(kind, spec, now)

    def _restart_policy(self, c: CState) -> str:
        policy = str((self.pod.get("spec") or {}).get("restartPolicy") or "Always")
        if c.init:
            return "Never" if policy == "Never" else "OnFailure"
        return policy

    def _reap(self, c: CState, now: float) -> None:
        """The container's process ended: record it and decide on a restart."""
        assert c.proc is not None
        code = c.proc.result()
        started = c.proc.started_at
        message = c.waiting[1] if c.waiting and c.waiting[0] == "StartError" else ""
        c.prev_term = c.last_term
        c.last_term = {"exitCode": code, "reason": "Completed" if code == 0 else (
            "StartError" if message else "Error"), "startedAt": started,
            "finishedAt": now_rfc3339(), "containerID": f"netns://{c.proc.container_id}"}
        if message:
            c.last_term["message"] = message
        ran_for = now - c.started_mono
        c.proc = None
        c.probes = {}
        c.waiting = None
        policy = self._restart_policy(c)
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        log.info("pod %s/%s: container %s exited with %d%s", self.namespace, self.name,
                 c.name, code, "; will restart" if restart else "")
        if not restart:
            c.done = True
        else:
            cfg = self.k.config
            if ran_for > 2 * cfg.restart_backoff_max:
                c.backoff = 0.0
            c.backoff = min(max(c.backoff * 2, cfg.restart_backoff), cfg.restart_backoff_max)
            c.next_start = now + c.backoff
            c.waiting = ("CrashLoopBackOff", f"back-off {c.backoff:g}s restarting failed "
                         f"container={c.name} pod={self.name}_{self.namespace}({self.uid})")
            if c.runs > 1:
                self.event("BackOff", "Back-off restarting failed container "
                           f"{c.name} in pod {self.name}_{self.namespace}({self.uid})",
                           "Warning", every=30)
        self._save()

    def _step(self, c: CState, now: float) -> None:
        if c.proc is not None:
            if c.proc.alive():
                return
            self._reap(c, now)
            return
        if c.done or now < c.next_start:
            return
        self._start(c, now)

    def _init_done(self) -> bool:
        return all(c.succeeded for c in self.init)

    def _step_containers(self) -> None:
        now = time.monotonic()
        for c in self.init:
            if c.succeeded:
                continue
            self._step(c, now)
            if not c.succeeded:
                return  # one init container at a time, in order
        for c in self.containers:
            self._step(c, now)

    def _probe(self) -> None:
        now = time.monotonic()
        sb = self.sandbox
        netns = sb.netns if sb and sb.netns else self.k.config.node_netns
        pod_ip = sb.ips[0] if sb and sb.ips else self.k.node_ip
        for c in self.containers:
            if not c.running:
                continue
            for kind in ("startup", "liveness", "readiness"):
                p = c.probes.get(kind)
                if p is None or now < p.next_due:
                    continue
                if kind != "startup" and not c.started:
                    continue
                if kind == "startup" and p.result is True:
                    continue
                ok, msg = run_probe(p.spec, c.spec, netns, pod_ip, self._env(c.spec),
                                    p.timeout)
                flip = p.record(ok, msg, time.monotonic())
                if not ok:
                    self.event("Unhealthy", f"{kind.capitalize()} probe failed: {msg}",
                               "Warning", every=30)
                if flip is False and kind in ("liveness", "startup"):
                    self.event("Killing", f"Container {c.name} failed {kind} probe, will be "
                               "restarted", every=0)
                    assert c.proc is not None
                    c.proc.stop(self._grace())
                    self._reap(c, time.monotonic())
                    break
                if flip is not None:
                    log.info("pod %s/%s: container %s %s probe %s", self.namespace, self.name,
                             c.name, kind, "succeeded" if flip else f"failed: {msg}")

    def _grace(self) -> float:
        g = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        return min(float(g if g is not None else 30), self.k.config.max_grace_period)

    def _stop_containers(self, grace: float) -> None:
        procs = [c for c in self.all_containers if c.proc is not None]
        alive = [c for c in procs if c.proc is not None and c.proc.alive()]
        for c in alive:
            assert c.proc is not None
            c.proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(c.proc is not None and c.proc.alive() for c in alive) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        now = time.monotonic()
        for c in procs:
            assert c.proc is not None
            c.proc.stop(0)  # SIGKILL what is left, reap
            code = c.proc.result()
            c.prev_term = c.last_term
            c.last_term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                           "startedAt": c.proc.started_at, "finishedAt": now_rfc3339(),
                           "containerID": f"netns://{c.proc.container_id}"}
            c.proc = None
            c.done = True
            c.probes = {}
            c.started_mono = now

    def teardown(self, grace: float) -> None:
        """Stop everything of this pod and remove what was made for it."""
        self._stop_containers(grace)
        self._teardown_network()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- status -------------------------------------------------------------
    def phase(self) -> str:
        if any(c.done and not c.succeeded for c in self.init):
            return "Failed"
        if self.sandbox is None or not self._init_done():
            return "Pending"
        policy = self._restart_policy(self.containers[0]) if self.containers else "Always"
        running = waiting = stopped = succeeded = 0
        for c in self.containers:
            if c.running:
                running += 1
            elif c.last_term is not None:
                stopped += 1
                if c.succeeded:
                    succeeded += 1
            else:
                waiting += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        if policy == "Always":
            return "Running"
        if all(c.done for c in self.containers):
            return "Succeeded" if stopped == succeeded else "Failed"
        return "Running"  # OnFailure: failed ones are being restarted

    def _container_status(self, c: CState, pending_init: bool) -> dict[str, Any]:
        st: dict[str, Any] = {"name": c.name, "image": c.spec.get("image", ""),
                              "imageID": c.image_id, "ready": c.ready,
                              "restartCount": c.restart_count, "started": c.started}
        if c.proc is not None and c.proc.alive():
            st["containerID"] = f"netns://{c.proc.container_id}"
            st["state"] = {"running": {"startedAt": c.proc.started_at}}
            if c.last_term:
                st["lastState"] = {"terminated": c.last_term}
        elif c.done and c.last_term:
            st["containerID"] = c.last_term["containerID"]
            st["state"] = {"terminated": c.last_term}
            if c.prev_term:
                st["lastState"] = {"terminated": c.prev_term}
        else:
            reason, message = c.waiting or (
                ("PodInitializing", "") if pending_init and not c.init
                else ("ContainerCreating", ""))
            w = {"reason": reason}
            if message:
                w["message"] = message
            st["state"] = {"waiting": w}
            if c.last_term:
                st["lastState"] = {"terminated": c.last_term}
                st["containerID"] = c.last_term["containerID"]
        if "lastState" not in st:
            st["lastState"] = {}
        return st

    def _conditions(self, phase: str) -> list[dict[str, Any]]:
        current = {c.get("type"): c for c in (self.pod.get("status") or {}).get("conditions")
                   or []}
        now = now_rfc3339()

        def cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
            status = "True" if ok else "False"
            old = current.get(type_) or {}
            c: dict[str, Any] = {"type": type_, "status": status, "lastProbeTime": None,
                                 "lastTransitionTime": old.get("lastTransitionTime") if
                                 old.get("status") == status and old.get("lastTransitionTime")
                                 else now}
            if not ok and reason:
                c["reason"] = reason
            if not ok and message:
                c["message"] = message
            return c

        init_pending = [c.name for c in self.init if not c.succeeded]
        unready = [c.name for c in self.containers if not c.ready]
        terminal = phase in TERMINAL
        gates = [g.get("conditionType") for g in
                 (self.pod.get("spec") or {}).get("readinessGates") or []]
        gates_ok = all((current.get(g) or {}).get("status") == "True" for g in gates)
        ready = not unready and not terminal
        unready_msg = f"containers with unready status: [{' '.join(unready)}]"
        return [
            cond("PodReadyToStartContainers", self.sandbox is not None),
            cond("Initialized", not init_pending, "ContainersNotInitialized",
                 f"containers with incomplete status: [{' '.join(init_pending)}]"),
            cond("ContainersReady", ready, "PodCompleted" if terminal else "ContainersNotReady",
                 "" if terminal else unready_msg),
            cond("Ready", ready and gates_ok,
                 "PodCompleted" if terminal else (
                     "ContainersNotReady" if not ready else "ReadinessGatesNotReady"),
                 "" if terminal else (unready_msg if not ready else
                                      "corresponding condition of pod readiness gate "
                                      "is not True")),
            cond("PodScheduled", True),
        ]

    def compute_status(self) -> dict[str, Any]:
        phase = self.terminal or self.phase()
        k = self.k
        pending_init = not self._init_done()
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self._conditions(phase),
            "hostIP": k.node_ip, "hostIPs": [{"ip": k.node_ip}],
            "startTime": self.start_time,
            "containerStatuses": [self._container_status(c, pending_init)
                                  for c in self.containers],
        }
        if self.init:
            status["initContainerStatuses"] = [self._container_status(c, False)
                                               for c in self.init]
        ips = self.sandbox.ips if self.sandbox else []
        if ips:
            status["podIP"] = ips[0]
            status["podIPs"] = [{"ip": ip} for ip in ips]
        return status

    def report_status(self) -> None:
        status = self.compute_status()
        if self.terminal:  # keep the IPs the pod had
            old = self.pod.get("status") or {}
            for key in ("podIP", "podIPs"):
                if key in old and key not in status:
                    status[key] = old[key]
        if not self._differs(status):
            return
        patch = dict(status)
        for key in ("podIPs", "hostIPs"):
            if key in patch:
                patch[key] = [{"$patch": "replace"}, *patch[key]]
        try:
            new = request(self.k.client, "PATCH", pod_path(self.namespace, self.name) + "/status",
                          {"metadata": {"uid": self.uid}, "status": patch},
                          content_type="application/strategic-merge-patch+json")
        except API_ERRORS as e:
            if _status(e) == 404:
                return
            log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, e)
            return
        self.update(new)

    def _differs(self, status: dict[str, Any]) -> bool:
        cur = self.pod.get("status") or {}
        for key, value in status.items():
            if key == "conditions":
                have = {c.get("type"): c for c in cur.get("conditions") or []}
                for c in value:
                    h = have.get(c["type"]) or {}
                    if any(h.get(f) != c.get(f) for f in ("status", "reason", "message")):
                        return True
            elif _strip(cur.get(key)) != _strip(value):
                return True
        return False


def _strip(v: Any) -> Any:
    """Drop None and empty values so our dicts compare with the apiserver's."""
    if isinstance(v, dict):
        return {k: _strip(x) for k, x in v.items() if x not in (None, {}, [], "")}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


# --- the kubelet ----------------------------------------------------------------

class NetnsKubelet:
    def __init__(self, config: KubeletConfig) -> None:
        self.config = config
        self.api: k8s.ApiClient | None = None
        self.node_ip = config.node_ip or ""
        self.cni = CniRuntime(list(config.cni_bin_dirs), config.node_netns, config.cni_timeout)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
        self._saved: dict[str, dict[str, Any]] = {}
        self._informer: Informer | None = None
        self._node_thread: threading.Thread | None = None
        self._node_uid = ""
        self._transitions: dict[str, tuple[str, str]] = {}
        self._network_ready: bool | None = None
        self.lease_renewals = 0
        self.status_updates = 0

    @property
    def pods_dir(self) -> Path:
        return self.config.state_dir / "pods"

    # --- lifecycle ----------------------------------------------------------
    def start(self) -> NetnsKubelet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        if not self.node_ip:
            self.node_ip = detect_node_ip(cfg.node_netns)
        for d in self.pods_dir.iterdir():
            saved = read_json(d / "state.json")
            if isinstance(saved, dict) and saved.get("uid"):
                self._saved[saved["uid"]] = saved
            else:
                shutil.rmtree(d, ignore_errors=True)
        self.api = api_client(cfg.kubeconfig)
        self.register_node()
        self.renew_lease()
        self._node_thread = threading.Thread(target=self._node_loop, name="kubelet-node",
                                             daemon=True)
        self._node_thread.start()
        inf = Informer(_NodePods(self.api, cfg.node_name), resync_period=60)
        inf.add_handler(self._on_pod)
        self._informer = inf
        inf.start()
        if not inf.wait_synced(120):
            raise TimeoutError("the pod informer did not sync within 120s")
        with self._lock:
            orphans = list(self._saved.values())
            self._saved.clear()
        for saved in orphans:  # pods gone while we were away: clean up after them
            pod = {"metadata": {"uid": saved["uid"], "namespace": saved["namespace"],
                                "name": saved["name"], "resourceVersion": "0"}}
            self._add_worker(PodWorker(self, pod, saved, orphan=True))
        log.info("kubelet for node %s started (node IP %s)", cfg.node_name, self.node_ip)

    def stop(self) -> None:
        """Stop; unless keep_pods, stop every pod and remove what was made."""
        self.stopping.set()
        if self._informer is not None:
            self._informer.stop()
        self.cni.kill_running()
        with self._lock:
            workers = list(self._workers.values())
            leftovers = list(self._saved.values())
            self._saved.clear()
        for w in workers:
            w.wake.set()
        for w in workers:
            w.thread.join(self.config.max_grace_period + self.config.cni_timeout + 30)
        if not self.config.keep_pods:
            for saved in leftovers:
                pod = {"metadata": {"uid": saved["uid"], "namespace": saved["namespace"],
                                    "name": saved["name"], "resourceVersion": "0"}}
                PodWorker(self, pod, saved, orphan=True).teardown(self.config.max_grace_period)
        if self._node_thread is not None:
            self._node_thread.join(30)
        if self.api is not None:
            self.api.close()
        log.info("kubelet for node %s stopped", self.config.node_name)

    def worker_done(self, w: PodWorker) -> None:
        with self._lock:
            if self._workers.get(w.uid) is w:
                del self._workers[w.uid]

    def _add_worker(self, w: PodWorker) -> None:
        with self._lock:
            if self.stopping.is_set():
                return
            self._workers[w.uid] = w
        w.start()

    def _on_pod(self, key: str, old: Obj | None, new: Obj | None) -> None:
        obj = new or old
        if obj is None or self.stopping.is_set():
            return
        uid = obj["metadata"]["uid"]
        with self._lock:
            w = self._workers.get(uid)
            saved = self._saved.pop(uid, None) if w is None else None
        if w is None:
            if new is None and saved is None:
                return
            w = PodWorker(self, new or obj, saved, orphan=new is None)
            self._add_worker(w)
        if new is None:
            w.mark_deleted()
        else:
            w.update(new)

    def pods(self) -> dict[str, PodWorker]:
        with self._lock:
            return {f"{w.namespace}/{w.name}": w for w in self._workers.values()}

    def pod_netns(self, namespace: str, name: str) -> str | None:
        """The network namespace of a running pod (our `kubectl exec`)."""
        w = self.pods().get(f"{namespace}/{name}")
        return w.sandbox.netns if w is not None and w.sandbox is not None else None

    # --- API ----------------------------------------------------------------
    @property
    def client(self) -> k8s.ApiClient:
        assert self.api is not None
        return self.api

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": uid}}
        try:
            for attempt in api_retry():
                with attempt:
                    request(self.client, "DELETE", pod_path(namespace, name), body)
        except API_ERRORS as e:
            if _status(e) not in (404, 409):
                log.warning("could not delete pod %s/%s: %s", namespace, name, e)

    def post_event(self, obj: Obj, reason: str, message: str, type_: str = "Normal") -> None:
        md = obj["metadata"]
        ns = md.get("namespace") or "default"
        now = now_rfc3339()
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"generateName": f"{md['name']}.", "namespace": ns},
              "involvedObject": {"kind": obj.get("kind", "Pod"), "apiVersion": "v1",
                                 "name": md["name"], "namespace": md.get("namespace"),
                                 "uid": md.get("uid")},
              "reason": reason, "message": message[:1024], "type": type_,
              "source": {"component": "kubelet", "host": self.config.node_name},
              "firstTimestamp": now, "lastTimestamp": now, "count": 1,
              "reportingComponent": "kubelet", "reportingInstance": self.config.node_name}
        try:
            request(self.client, "POST", f"/api/v1/namespaces/{ns}/events", ev)
        except API_ERRORS as e:
            log.warning("could not record event %s on %s: %s", reason, md["name"], e)

    # --- node ---------------------------------------------------------------
    def _node_labels(self) -> dict[str, str]:
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                           platform.machine())
        return {"kubernetes.io/hostname": self.config.node_name, "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch, "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch, **self.config.node_labels}

    def network_ready(self) -> bool:
        try:
            load_network(self.config.cni_conf_dir)
            return True
        except NoNetworkConfig:
            return False

    def node_status(self) -> dict[str, Any]:
        now = now_rfc3339()
        mem_kib = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
        cap = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
               "ephemeral-storage": "10Gi"}
        net_ok = self.network_ready()

        def cond(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
            prev = self._transitions.get(type_)
            if prev is None or prev[0] != status:
                self._transitions[type_] = (status, now)
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": self._transitions[type_][1]}

        ready = cond("Ready", "True", "KubeletReady", "kubelet is posting ready status") \
            if net_ok else cond("Ready", "False", "KubeletNotReady",
                                "container runtime network not ready: NetworkReady=false "
                                "reason:NetworkPluginNotReady message:Network plugin returns "
                                "error: cni plugin not initialized")
        uname = os.uname()
        boot_id = ""
        with contextlib.suppress(OSError):
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        machine_id = ""
        with contextlib.suppress(OSError):
            machine_id = Path("/etc/machine-id").read_text().strip()
        os_image = "Linux"
        with contextlib.suppress(OSError):
            for line in Path("/etc/os-release").read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    os_image = line.split("=", 1)[1].strip('"')
        return {
            "capacity": cap, "allocatable": dict(cap),
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                     "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure",
                     "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID",
                     "kubelet has sufficient PID available"),
                ready,
            ],
            "addresses": [{"type": "InternalIP", "address": self.node_ip},
                          {"type": "Hostname", "address": self.config.node_name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": machine_id, "systemUUID": machine_id, "bootID": boot_id,
                "kernelVersion": uname.release, "osImage": os_image,
                "containerRuntimeVersion": "netns://0.1.0",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self._node_labels()["kubernetes.io/arch"]},
        }

    def register_node(self) -> None:
        name = self.config.node_name
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": self._node_labels()}, "spec": {}}
        for attempt in api_retry(90):
            with attempt:
                try:
                    node = request(self.client, "POST", "/api/v1/nodes", body)
                    log.info("registered node %s", name)
                except k8s.ApiException as e:
                    if e.status != 409:
                        raise
                    node = request(self.client, "PATCH", node_path(name),
                                   {"metadata": {"labels": self._node_labels()}},
                                   content_type="application/merge-patch+json")
                    log.info("node %s already registered; updated it", name)
                self._node_uid = node["metadata"]["uid"]
        self.patch_node_status()

    def patch_node_status(self) -> None:
        status = self.node_status()
        for attempt in api_retry():
            with attempt:
                request(self.client, "PATCH", node_path(self.config.node_name) + "/status",
                        {"status": status},
                        content_type="application/strategic-merge-patch+json")
        self.status_updates += 1

    def renew_lease(self) -> None:
        name = self.config.node_name
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": self.config.lease_duration,
                "renewTime": microtime()}
        for attempt in api_retry():
            with attempt:
                try:
                    request(self.client, "PATCH", path, {"spec": spec},
                            content_type="application/merge-patch+json")
                except k8s.ApiException as e:
                    if e.status != 404:
                        raise
                    request(self.client, "POST", path.rsplit("/", 1)[0], {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                          "name": name,
                                                          "uid": self._node_uid}]},
                        "spec": spec})
        self.lease_renewals += 1

    def _node_loop(self) -> None:
        cfg = self.config
        next_lease = time.monotonic() + cfg.lease_renew_interval
        next_status = time.monotonic() + cfg.node_status_interval
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            try:
                net_ok = self.network_ready()
                if now >= next_status or net_ok != self._network_ready:
                    self._network_ready = net_ok
                    self.patch_node_status()
                    next_status = now + cfg.node_status_interval
                if now >= next_lease:
                    self.renew_lease()
                    next_lease = now + cfg.lease_renew_interval
            except API_ERRORS as e:
                if _status(e) == 404 and not self.stopping.is_set():
                    log.warning("node %s is gone; registering it again", cfg.node_name)
                    with contextlib.suppress(*API_ERRORS):
                        self.register_node()
                else:
                    log.warning("node heartbeat failed: %s", e)


def pod_netns_name(state_dir: Path, uid: str) -> str:
    """The network namespace the kubelet with `state_dir` made for the pod with
    `uid` (for `ovnkube-local exec`); LookupError when it has none."""
    for d in (state_dir / "pods").glob(f"*_{uid}"):
        saved = read_json(d / "state.json")
        if isinstance(saved, dict) and saved.get("uid") == uid:
            sandbox = saved.get("sandbox") or {}
            if sandbox.get("netns"):
                return str(sandbox["netns"])
            if sandbox:
                raise LookupError(f"pod {saved.get('namespace')}/{saved.get('name')} uses "
                                  "the node's network (hostNetwork)")
    raise LookupError(f"pod with uid {uid} has no network namespace on this node "
                      f"(not started yet, or finished); kubelet state in {state_dir}")


def find_pod_netns(state_dir: Path, namespace: str, name: str) -> str | None:
    """The network namespace of pod namespace/name from a kubelet's state dir
    (for `ovnkube-local exec`), None when it has none."""
    for d in (state_dir / "pods").glob(f"{namespace}_{name}_*"):
        saved = read_json(d / "state.json")
        if isinstance(saved, dict) and saved.get("name") == name and saved.get("sandbox"):
            return saved["sandbox"].get("netns")
    return None


def parse_args(argv: list[str] | None = None) -> KubeletConfig:
    p = argparse.ArgumentParser(prog="netns-kubelet", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--node-name", default=socket.gethostname())
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d")
    p.add_argument("--cni-bin-dir", default="/opt/cni/bin",
                   help="colon-separated directories of CNI plugins")
    p.add_argument("--pod-netns-prefix", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--node-ip", default=None)
    p.add_argument("--node-netns", default=None,
                   help="the node's network namespace when this kubelet runs outside it")
    p.add_argument("--keep-pods", action="store_true",
                   help="on shutdown leave pods running (a restart adopts them)")
    p.add_argument("--node-labels", default="", help="k=v,k2=v2")
    p.add_argument("--python", default=sys.executable, help="interpreter for agnhost")
    p.add_argument("--max-grace-period", type=float, default=5.0)
    p.add_argument("--node-status-interval", type=float, default=10.0)
    p.add_argument("--lease-renew-interval", type=float, default=10.0)
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    labels = dict(kv.split("=", 1) for kv in a.node_labels.split(",") if "=" in kv)
    return KubeletConfig(
        node_name=a.node_name, kubeconfig=a.kubeconfig, cni_conf_dir=Path(a.cni_conf_dir),
        cni_bin_dirs=[Path(d) for d in a.cni_bin_dir.split(":") if d],
        pod_netns_prefix=a.pod_netns_prefix, state_dir=Path(a.state_dir), node_ip=a.node_ip,
        node_netns=a.node_netns, keep_pods=a.keep_pods, node_labels=labels, python=a.python,
        max_grace_period=a.max_grace_period, node_status_interval=a.node_status_interval,
        lease_renew_interval=a.lease_renew_interval)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    kubelet = NetnsKubelet(cfg)
    try:
        kubelet.start()
    except Exception as e:
        log.error("kubelet failed to start: %s", e)
        return 1
    while not done.wait(1.0):
        pass
    kubelet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
