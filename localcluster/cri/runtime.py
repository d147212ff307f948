"""The CRI RuntimeService of ovnkube-local: what containerd's CRI plugin is to
a kind node, for the real kubelet.

A sandbox is a network namespace wired by the node's CNI config (libcni's
order: the first config in the conf dir, every plugin of its list, DEL in
reverse with the ADD result), or the node's own namespace for hostNetwork
pods. A container is a host process under a shim (localcluster/cri/shim.py)
in that namespace, with its own mount and UTS namespaces: the kubelet's
volumes at their container paths, the pod's resolv.conf and hostname. What an
image runs comes from the image map. Resource limits are not applied (the
node runs with cgroupsPerQOS off); there is no checkpointing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import grpc

from localcluster.cri import hostports
from localcluster.cri.cleanup import remember_mountpoints
from localcluster.cri.cni import (
    CniNetwork,
    CniRuntime,
    NoNetworkConfig,
    PluginError,
    cni_args,
    load_network,
    result_ips,
)
from localcluster.cri.gen import api_pb2 as pb
from localcluster.cri.gen import api_pb2_grpc as pbg
from localcluster.cri.imageservice import ImageStore, normalized
from localcluster.cri.records import ContainerRecord, SandboxRecord, Store
from localcluster.cri.stats import container_stats, sandbox_stats
from localcluster.cri.streaming import AttachTarget, ExecTarget, ForwardTarget, StreamingServer
from localcluster.images import (
    ImageError,
    argv_for,
    load_map,
    program_files,
    repository,
    substitute,
)

log = logging.getLogger(__name__)

RUNTIME_NAME = "ovnkube-local"
RUNTIME_VERSION = "0.1.0"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass
class RuntimeConfig:
    state_dir: Path
    cni_conf_dir: Path
    cni_bin_dirs: list[Path]
    netns_prefix: str
    node_name: str
    python: str = sys.executable  # what the image map's {python} runs


def _match(labels: Any, selector: Any) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class RuntimeService(pbg.RuntimeServiceServicer):
    def __init__(self, cfg: RuntimeConfig, images: ImageStore, streaming: StreamingServer
                 ) -> None:
        self.cfg = cfg
        self.images = images
        self.streaming = streaming
        self.store = Store(cfg.state_dir)
        self.cni = CniRuntime(list(cfg.cni_bin_dirs))

    # --- runtime --------------------------------------------------------------
    def Version(self, request: Any, context: grpc.ServicerContext) -> pb.VersionResponse:
        return pb.VersionResponse(version="0.1.0", runtime_name=RUNTIME_NAME,
                                  runtime_version=RUNTIME_VERSION, runtime_api_version="v1")

    def Status(self, request: Any, context: grpc.ServicerContext) -> pb.StatusResponse:
        net = pb.RuntimeCondition(type="NetworkReady", status=True)
        try:
            load_network(self.cfg.cni_conf_dir)
        except NoNetworkConfig as e:
            net = pb.RuntimeCondition(type="NetworkReady", status=False,
                                      reason="NetworkPluginNotReady",
                                      message=f"Network plugin returns error: {e}")
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=[
            pb.RuntimeCondition(type="RuntimeReady", status=True), net]))

    def RuntimeConfig(self, request: Any, context: grpc.ServicerContext
                      ) -> pb.RuntimeConfigResponse:
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(
            cgroup_driver=pb.CGROUPFS))

    def UpdateRuntimeConfig(self, request: Any, context: grpc.ServicerContext
                            ) -> pb.UpdateRuntimeConfigResponse:
        return pb.UpdateRuntimeConfigResponse()  # the pod CIDR is the CNI plugin's business

    # --- sandboxes ------------------------------------------------------------
    def _sandbox(self, sid: str, context: grpc.ServicerContext) -> SandboxRecord:
        sb = self.store.find(self.store.sandboxes, sid)
        if sb is None or sb.setting_up:
            context.abort(grpc.StatusCode.NOT_FOUND, f"an error occurred when try to find "
                          f"sandbox: not found: sandbox {sid!r}")
        return sb

    def _cni_env(self, sb: SandboxRecord) -> dict[str, str]:
        return {"CNI_CONTAINERID": sb.id, "CNI_NETNS": f"/run/netns/{sb.netns}",
                "CNI_IFNAME": "eth0",
                "CNI_ARGS": cni_args(sb.namespace, sb.name, sb.uid, sb.id)}

    def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: grpc.ServicerContext
                      ) -> pb.RunPodSandboxResponse:
        c = request.config
        sid = secrets.token_hex(32)
        ns_opts = c.linux.security_context.namespace_options
        sb = SandboxRecord(sid, c.metadata.name, c.metadata.namespace, c.metadata.uid,
                           c.metadata.attempt, time.time_ns(), c.hostname or c.metadata.name,
                           c.log_directory, dict(c.labels), dict(c.annotations),
                           request.runtime_handler)
        sdir = self.cfg.state_dir / "sandbox-files" / sid
        sdir.mkdir(parents=True, exist_ok=True)
        if c.HasField("dns_config") and (c.dns_config.servers or c.dns_config.searches):
            d = c.dns_config
            lines = [f"nameserver {s}" for s in d.servers]
            if d.searches:
                lines.append("search " + " ".join(d.searches))
            if d.options:
                lines.append("options " + " ".join(d.options))
            (sdir / "resolv.conf").write_text("\n".join(lines) + "\n")
            sb.resolv_conf = str(sdir / "resolv.conf")
        if ns_opts.network == pb.NODE:
            self.store.save(sb)
            return pb.RunPodSandboxResponse(pod_sandbox_id=sid)
        try:
            net = load_network(self.cfg.cni_conf_dir)
        except NoNetworkConfig as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"failed to setup network for sandbox {sid!r}: {e}")
        sb.netns = f"{self.cfg.netns_prefix}{sid[:12]}"
        sb.network = net.to_json()
        sb.cni_runtime_config = _port_mappings(c.port_mappings)
        subprocess.run(["ip", "netns", "add", sb.netns], check=True, capture_output=True)
        subprocess.run(["ip", "-n", sb.netns, "link", "set", "lo", "up"], check=True,
                       capture_output=True)
        sb.setting_up = True
        self.store.save(sb)  # tracked before the ADD, so nothing can leak
        env = self._cni_env(sb)
        try:
            result = self.cni.add(net, env, sb.cni_runtime_config)
            ips = result_ips(result, "eth0")
            if not ips:
                raise PluginError(f"the CNI result has no IP for eth0: {json.dumps(result)[:300]}")
        except (PluginError, OSError) as e:
            plugin = e.plugin if isinstance(e, PluginError) else ""
            msg = e.msg if isinstance(e, PluginError) else str(e)
            with contextlib.suppress(PluginError, OSError):
                self.cni.delete(net, env, None, sb.cni_runtime_config)
            self._remove_netns(sb)
            self.store.forget(sb)
            context.abort(grpc.StatusCode.UNKNOWN,
                          f'failed to setup network for sandbox "{sid}": plugin '
                          f'type="{plugin}" name="{net.name}" failed (add): {msg}')
        sb.cni_result, sb.ips, sb.setting_up = result, ips, False
        self.store.save(sb)
        if sb.cni_runtime_config.get("portMappings"):
            self._sync_hostports(context)
        log.info("sandbox %s/%s %s: netns %s, IPs %s", sb.namespace, sb.name, sid[:12],
                 sb.netns, ips)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    def _sync_hostports(self, context: grpc.ServicerContext) -> None:
        with self.store.lock:
            mappings = [(sb.ips[0], m) for sb in self.store.sandboxes.values()
                        if sb.ready and sb.ips
                        for m in sb.cni_runtime_config.get("portMappings", [])]
        try:
            hostports.sync(mappings)
        except (RuntimeError, OSError) as e:
            context.abort(grpc.StatusCode.UNKNOWN, f"hostPort rules: {e}")

    def _remove_netns(self, sb: SandboxRecord) -> None:
        if sb.netns and Path(f"/run/netns/{sb.netns}").exists():
            subprocess.run(["ip", "netns", "del", sb.netns], capture_output=True)

    def _teardown_network(self, sb: SandboxRecord, context: grpc.ServicerContext) -> None:
        if sb.netns and sb.network is not None and sb.cni_result is not None:
            try:
                self.cni.delete(CniNetwork.from_json(sb.network), self._cni_env(sb),
                                sb.cni_result, sb.cni_runtime_config)
            except PluginError as e:
                context.abort(grpc.StatusCode.UNKNOWN, f'failed to destroy network for '
                              f'sandbox "{sb.id}": plugin type="{e.plugin}" failed (delete): '
                              f'{e.msg}')
            sb.cni_result = None
        self._remove_netns(sb)

    def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: grpc.ServicerContext
                       ) -> pb.StopPodSandboxResponse:
        sb = self.store.find(self.store.sandboxes, request.pod_sandbox_id)
        if sb is None:
            return pb.StopPodSandboxResponse()  # already gone: stopping is idempotent
        for ctr in self._containers_of(sb.id):
            ctr.stop(0)
        self._teardown_network(sb, context)
        sb.ready = False
        self.store.save(sb)
        if sb.cni_runtime_config.get("portMappings"):
            self._sync_hostports(context)
        return pb.StopPodSandboxResponse()

    def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest,
                         context: grpc.ServicerContext) -> pb.RemovePodSandboxResponse:
        sb = self.store.find(self.store.sandboxes, request.pod_sandbox_id)
        if sb is None:
            return pb.RemovePodSandboxResponse()
        for ctr in self._containers_of(sb.id):
            ctr.stop(0)
            self._forget_container(ctr)
        self._teardown_network(sb, context)
        shutil.rmtree(self.cfg.state_dir / "sandbox-files" / sb.id, ignore_errors=True)
        self.store.forget(sb)
        return pb.RemovePodSandboxResponse()

    def _sandbox_status(self, sb: SandboxRecord) -> pb.PodSandboxStatus:
        mode = pb.NODE if sb.netns is None else pb.POD
        st = pb.PodSandboxStatus(
            id=sb.id, metadata=sb.metadata(), state=sb.state, created_at=sb.created_ns,
            labels=sb.labels, annotations=sb.annotations, runtime_handler=sb.runtime_handler,
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(
                options=pb.NamespaceOption(network=mode, pid=pb.CONTAINER, ipc=pb.POD))))
        if sb.ips and sb.ready:
            st.network.ip = sb.ips[0]
            st.network.additional_ips.extend(pb.PodIP(ip=i) for i in sb.ips[1:])
        return st

    def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest,
                         context: grpc.ServicerContext) -> pb.PodSandboxStatusResponse:
        sb = self._sandbox(request.pod_sandbox_id, context)
        resp = pb.PodSandboxStatusResponse(status=self._sandbox_status(sb),
                                           timestamp=time.time_ns())
        if request.verbose:
            resp.info["info"] = json.dumps({"netns": sb.netns, "ips": sb.ips})
        return resp

    def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: grpc.ServicerContext
                       ) -> pb.ListPodSandboxResponse:
        f = request.filter
        sandboxes = self.store.listed_sandboxes()
        out = []
        for sb in sandboxes:
            if f.id and not sb.id.startswith(f.id):
                continue
            if f.HasField("state") and sb.state != f.state.state:
                continue
            if not _match(sb.labels, f.label_selector):
                continue
            out.append(pb.PodSandbox(id=sb.id, metadata=sb.metadata(), state=sb.state,
                                     created_at=sb.created_ns, labels=sb.labels,
                                     annotations=sb.annotations,
                                     runtime_handler=sb.runtime_handler))
        return pb.ListPodSandboxResponse(items=out)

    # --- containers -----------------------------------------------------------
    def _containers_of(self, sandbox_id: str) -> list[ContainerRecord]:
        with self.store.lock:
            return [c for c in self.store.containers.values() if c.sandbox_id == sandbox_id]

    def _container(self, cid: str, context: grpc.ServicerContext) -> ContainerRecord:
        c = self.store.find(self.store.containers, cid)
        if c is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"an error occurred when try to find "
                          f"container {cid!r}: not found")
        return c

    def _argv(self, image: str, command: Iterable[str], args: Iterable[str]) -> list[str]:
        return argv_for(image, list(command), list(args), self.cfg.python, load_map())

    def CreateContainer(self, request: pb.CreateContainerRequest,
                        context: grpc.ServicerContext) -> pb.CreateContainerResponse:
        sb = self._sandbox(request.pod_sandbox_id, context)
        c = request.config
        image = c.image.user_specified_image or c.image.image
        iid = self.images.resolve(c.image.image) or self.images.resolve(image)
        if iid is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f'image "{image}" is not present on '
                          "this node (pull it first)")
        ref = next(iter(self.images.tags.get(str(iid), [])), image)
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": sb.hostname}
        env.update({kv.key: kv.value for kv in c.envs})
        try:
            # The kubelet has expanded $(VAR) references already.
            argv = self._argv(ref, list(c.command), list(c.args))
        except ImageError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        cid = secrets.token_hex(32)
        run_dir = self.cfg.state_dir / "container-files" / cid
        run_dir.mkdir(parents=True, exist_ok=True)
        mounts = [{"host_path": m.host_path, "container_path": m.container_path,
                   "readonly": m.readonly} for m in c.mounts]
        if sb.resolv_conf and not any(m["container_path"] == "/etc/resolv.conf"
                                      for m in mounts):
            mounts.append({"host_path": sb.resolv_conf, "container_path": "/etc/resolv.conf",
                           "readonly": False})
        for script, path in program_files(ref, self.cfg.python, load_map(), run_dir / "bin"):
            if not any(m["container_path"] == path for m in mounts):
                mounts.append({"host_path": script, "container_path": path, "readonly": True})
        log_path = os.path.join(sb.log_directory, c.log_path) if c.log_path else ""
        # Unix socket paths are short (108 bytes): not under run_dir.
        attach = self.cfg.state_dir / "attach" / f"{cid[:16]}.sock"
        attach.parent.mkdir(exist_ok=True)
        rec = ContainerRecord(cid, sb.id, c.metadata.name, c.metadata.attempt, image, str(iid),
                              argv, env, c.working_dir or "/", mounts, log_path,
                              dict(c.labels), dict(c.annotations), time.time_ns(),
                              str(run_dir), tty=c.tty, stdin=c.stdin, stdin_once=c.stdin_once,
                              attach_socket=str(attach))
        self.store.save(rec)
        return pb.CreateContainerResponse(container_id=cid)

    def StartContainer(self, request: pb.StartContainerRequest, context: grpc.ServicerContext
                       ) -> pb.StartContainerResponse:
        rec = self._container(request.container_id, context)
        sb = self._sandbox(rec.sandbox_id, context)
        if rec.started_ns or rec.shim_pid:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"container {rec.id} was already started")
        log_path = rec.log_path or str(Path(rec.run_dir) / "output.log")
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        spec = {"argv": rec.argv, "env": rec.env, "cwd": rec.cwd, "netns": sb.netns,
                # hostNetwork pods see the node's name, as on a machine of its own.
                "hostname": sb.hostname if sb.netns else self.cfg.node_name,
                "mounts": rec.mounts,
                "log_path": log_path, "status_path": str(rec.status_file),
                "tty": rec.tty, "stdin": rec.stdin, "stdin_once": rec.stdin_once,
                "attach_socket": rec.attach_socket}
        spec_file = Path(rec.run_dir) / "spec.json"
        spec_file.write_text(json.dumps(spec))
        p = subprocess.Popen([self.cfg.python, "-m", "localcluster.cri.shim", str(spec_file)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=open(Path(rec.run_dir) / "shim.log", "ab"),  # noqa: SIM115
                             start_new_session=True)
        rec.shim_pid = p.pid
        self.store.save(rec)
        # The shim writes its status once the process is started (or failed to).
        deadline = time.monotonic() + 30
        while not rec.status_file.exists() and p.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        rec.refresh()
        self.store.save(rec)
        remember_mountpoints(self.cfg.state_dir, rec.status_file)
        if rec.finished_ns and rec.reason == "StartError":
            context.abort(grpc.StatusCode.UNKNOWN, f"failed to start container: {rec.message}")
        log.info("container %s (%s) started: %s", rec.name, rec.id[:12], rec.argv)
        return pb.StartContainerResponse()

    def StopContainer(self, request: pb.StopContainerRequest, context: grpc.ServicerContext
                      ) -> pb.StopContainerResponse:
        rec = self.store.find(self.store.containers, request.container_id)
        if rec is not None:
            rec.stop(float(request.timeout))
            self.store.save(rec)
        return pb.StopContainerResponse()

    def _forget_container(self, rec: ContainerRecord) -> None:
        shutil.rmtree(rec.run_dir, ignore_errors=True)
        self.store.forget(rec)

    def RemoveContainer(self, request: pb.RemoveContainerRequest,
                        context: grpc.ServicerContext) -> pb.RemoveContainerResponse:
        rec = self.store.find(self.store.containers, request.container_id)
        if rec is not None:
            rec.stop(0)
            self._forget_container(rec)
        return pb.RemoveContainerResponse()

    def _container_proto(self, rec: ContainerRecord) -> pb.Container:
        return pb.Container(id=rec.id, pod_sandbox_id=rec.sandbox_id, metadata=rec.metadata(),
                            image=pb.ImageSpec(image=rec.image_id,
                                               user_specified_image=rec.image),
                            image_ref=rec.image_id, image_id=rec.image_id, state=rec.state,
                            created_at=rec.created_ns, labels=rec.labels,
                            annotations=rec.annotations)

    def ListContainers(self, request: pb.ListContainersRequest, context: grpc.ServicerContext
                       ) -> pb.ListContainersResponse:
        f = request.filter
        with self.store.lock:
            recs = list(self.store.containers.values())
        out = []
        for rec in recs:
            if f.id and not rec.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not rec.sandbox_id.startswith(f.pod_sandbox_id):
                continue
            if f.HasField("state") and rec.state != f.state.state:
                continue
            if not _match(rec.labels, f.label_selector):
                continue
            out.append(self._container_proto(rec))
        return pb.ListContainersResponse(containers=out)

    def ContainerStatus(self, request: pb.ContainerStatusRequest,
                        context: grpc.ServicerContext) -> pb.ContainerStatusResponse:
        rec = self._container(request.container_id, context)
        state = rec.state
        st = pb.ContainerStatus(
            id=rec.id, metadata=rec.metadata(), state=state, created_at=rec.created_ns,
            started_at=rec.started_ns, finished_at=rec.finished_ns,
            exit_code=rec.exit_code if state == pb.CONTAINER_EXITED else 0,
            image=pb.ImageSpec(image=normalized(rec.image), user_specified_image=rec.image),
            image_ref=rec.image_id, image_id=rec.image_id, reason=rec.reason,
            message=rec.message, labels=rec.labels, annotations=rec.annotations,
            log_path=rec.log_path,
            mounts=[pb.Mount(host_path=m["host_path"], container_path=m["container_path"],
                             readonly=m["readonly"]) for m in rec.mounts])
        return pb.ContainerStatusResponse(status=st)

    def UpdateContainerResources(self, request: Any, context: grpc.ServicerContext
                                 ) -> pb.UpdateContainerResourcesResponse:
        return pb.UpdateContainerResourcesResponse()  # limits are not applied here

    def ReopenContainerLog(self, request: pb.ReopenContainerLogRequest,
                           context: grpc.ServicerContext) -> pb.ReopenContainerLogResponse:
        rec = self._container(request.container_id, context)
        if rec.state != pb.CONTAINER_RUNNING:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "container is not running")
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.shim_pid, 10)  # SIGUSR1: the shim reopens the log file
        return pb.ReopenContainerLogResponse()

    # --- exec, port-forward ---------------------------------------------------
    def _exec_target(self, rec: ContainerRecord, cmd: list[str], tty: bool, stdin: bool,
                     stdout: bool, stderr: bool, context: grpc.ServicerContext) -> ExecTarget:
        if rec.state != pb.CONTAINER_RUNNING:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"container {rec.id} is not running")
        if not cmd:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "exec needs a command")
        image = load_map().get(repository(rec.image))
        prog = image.programs.get(cmd[0]) if image else None
        if prog is not None:
            cmd = [substitute(a, self.cfg.python) for a in prog] + cmd[1:]
        exe = cmd[0]
        found = os.access(exe, os.X_OK) if "/" in exe else shutil.which(
            exe, path=rec.env.get("PATH", DEFAULT_PATH))
        error = "" if found else (f'exec failed: unable to start container process: exec: '
                                  f'"{exe}": executable file not found in $PATH')
        # The shim made the container's mount and UTS namespaces; exec joins them.
        argv = ["nsenter", f"--target={rec.pid}", "--net", "--mount", "--uts", "--", *cmd]
        return ExecTarget(argv, dict(rec.env), rec.cwd, tty, stdin, stdout, stderr, error)

    def ExecSync(self, request: pb.ExecSyncRequest, context: grpc.ServicerContext
                 ) -> pb.ExecSyncResponse:
        rec = self._container(request.container_id, context)
        t = self._exec_target(rec, list(request.cmd), False, False, True, True, context)
        if t.error:
            context.abort(grpc.StatusCode.UNKNOWN, t.error)
        try:
            res = subprocess.run(t.argv, env=t.env, cwd=t.cwd, capture_output=True,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 timeout=request.timeout or None)
        except subprocess.TimeoutExpired:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"command {list(request.cmd)} timed out after {request.timeout}s")
        return pb.ExecSyncResponse(stdout=res.stdout, stderr=res.stderr,
                                   exit_code=res.returncode)

    def Exec(self, request: pb.ExecRequest, context: grpc.ServicerContext) -> pb.ExecResponse:
        rec = self._container(request.container_id, context)
        t = self._exec_target(rec, list(request.cmd), request.tty, request.stdin,
                              request.stdout, request.stderr, context)
        return pb.ExecResponse(url=self.streaming.exec_url(t))

    def Attach(self, request: pb.AttachRequest, context: grpc.ServicerContext
               ) -> pb.AttachResponse:
        rec = self._container(request.container_id, context)
        if rec.state != pb.CONTAINER_RUNNING:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"container {rec.id} is not running")
        if request.stdin and not rec.stdin:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "stdin was not requested for this container (spec.stdin)")
        return pb.AttachResponse(url=self.streaming.attach_url(AttachTarget(
            rec.attach_socket, rec.tty, request.stdin, request.stdout, request.stderr)))

    def PortForward(self, request: pb.PortForwardRequest, context: grpc.ServicerContext
                    ) -> pb.PortForwardResponse:
        sb = self._sandbox(request.pod_sandbox_id, context)
        return pb.PortForwardResponse(url=self.streaming.portforward_url(
            ForwardTarget(sb.id, sb.netns)))

    # --- stats ----------------------------------------------------------------
    def ContainerStats(self, request: pb.ContainerStatsRequest,
                       context: grpc.ServicerContext) -> pb.ContainerStatsResponse:
        return pb.ContainerStatsResponse(
            stats=container_stats(self._container(request.container_id, context)))

    def ListContainerStats(self, request: pb.ListContainerStatsRequest,
                           context: grpc.ServicerContext) -> pb.ListContainerStatsResponse:
        f = request.filter
        with self.store.lock:
            recs = list(self.store.containers.values())
        out = [container_stats(r) for r in recs
               if (not f.id or r.id.startswith(f.id))
               and (not f.pod_sandbox_id or r.sandbox_id.startswith(f.pod_sandbox_id))
               and _match(r.labels, f.label_selector) and r.state == pb.CONTAINER_RUNNING]
        return pb.ListContainerStatsResponse(stats=out)

    def PodSandboxStats(self, request: pb.PodSandboxStatsRequest,
                        context: grpc.ServicerContext) -> pb.PodSandboxStatsResponse:
        sb = self._sandbox(request.pod_sandbox_id, context)
        return pb.PodSandboxStatsResponse(stats=sandbox_stats(sb, self._containers_of(sb.id)))

    def ListPodSandboxStats(self, request: pb.ListPodSandboxStatsRequest,
                            context: grpc.ServicerContext) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        sbs = self.store.listed_sandboxes()
        return pb.ListPodSandboxStatsResponse(stats=[
            sandbox_stats(sb, self._containers_of(sb.id)) for sb in sbs
            if (not f.id or sb.id.startswith(f.id)) and _match(sb.labels, f.label_selector)])


def _port_mappings(mappings: Iterable[Any]) -> dict[str, Any]:
    ports = [{"hostPort": m.host_port, "containerPort": m.container_port,
              "protocol": {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}[m.protocol],
              "hostIP": m.host_ip} for m in mappings if m.host_port]
    return {"portMappings": ports} if ports else {}
