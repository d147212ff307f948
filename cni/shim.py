"""`ovn-k8s-cni-overlay`: the CNI plugin binary kubelet (or the container
runtime) executes for every pod sandbox.

It is deliberately thin: it checks the CNI environment and network config,
forwards the call to the node agent's CNI server over a unix socket (HTTP), and
prints the agent's answer on stdout. Errors are printed as CNI error JSON on
stdout (libcni reads them from there); logs go to stderr and to a log file.

Standard library only, and nothing of ours outside this file: the node agent
installs this very file into the CNI bin dir as a self-contained executable,
started with `python -I -S` so that start-up stays small.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; only the type checker needs it
    from typing import Any

PLUGIN_TYPE = "ovn-k8s-cni-overlay"
SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
# The node's default paths, defined here once for the agent's flags and the
# test bed too (this file must stay self-contained, so it cannot import them).
DEFAULT_SOCKET = "/var/run/ovn-kubernetes/cni/ovn-cni-server.sock"
DEFAULT_LOG_FILE = "/var/log/ovn-kubernetes/ovn-k8s-cni-overlay.log"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_CONF_DIR = "/etc/cni/net.d"
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
# How long the shim waits for the server's answer (the server has its own,
# shorter, timeouts for the pod annotation and ovn-installed).
REPLY_TIMEOUT = 300.0

# CNI spec 1.1.0 error codes, and ours (100+).
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
ERR_INTERNAL = 100
ERR_BAD_ANNOTATION = 101
ERR_OVN_INSTALLED_TIMEOUT = 102
ERR_CHECK_FAILED = 103
ERR_PLUMBING = 104

_CONTAINER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# Kubernetes names: a namespace is a DNS label, a pod name a DNS subdomain.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# The largest network config (stdin) and CNI server request we take: far more
# than a CHECK's prevResult or a GC's valid-attachments of a full node need.
MAX_CONFIG_BYTES = 4 << 20
# What a plugin config may hold: the spec's keys (and those libcni adds), ours.
KNOWN_CONFIG_KEYS = frozenset({
    "cniVersion", "cniVersions", "name", "type", "args", "ipMasq", "ipam", "dns",
    "capabilities", "runtimeConfig", "prevResult", "disableCheck", "disableGC",
    "cni.dev/valid-attachments", "cni.dev/attachments",
    "serverSocket", "logFile", "logLevel", "mtu"})
# CNI_ARGS kubelet passes; others are an error unless IgnoreUnknown is set.
KNOWN_CNI_ARGS = frozenset({"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME",
                            "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID"})


class CniError(Exception):
    """A CNI error: code, message and details, as the spec prints them."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str = "1.1.0") -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


# --- validation (the node agent's CNI server uses the same functions) ---------

def parse_config(raw: str | bytes) -> dict[str, Any]:
    """The network config from stdin, checked; CniError 6/7/1/2 otherwise."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise CniError(ERR_INVALID_CONFIG, f"network config is {len(raw)} bytes, more than "
                       f"the {MAX_CONFIG_BYTES} this plugin takes")
    try:
        conf = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CniError(ERR_DECODE, f"network config on stdin is not JSON: {e}") from None
    if not isinstance(conf, dict):
        raise CniError(ERR_INVALID_CONFIG,
                       f"network config must be a JSON object, got {type(conf).__name__}")
    version = conf.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(ERR_INVALID_CONFIG, f"network config: cniVersion {version!r} is missing "
                       f"or not a string; supported: {', '.join(SUPPORTED_VERSIONS)}")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(ERR_INCOMPATIBLE_VERSION,
                       f"network config: cniVersion {version!r} is not supported; "
                       f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    name = conf.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(ERR_INVALID_CONFIG,
                       f"network config: name {name!r} is missing or not a non-empty string")
    if conf.get("type") != PLUGIN_TYPE:
        raise CniError(ERR_INVALID_CONFIG,
                       f"network config: type {conf.get('type')!r} is not {PLUGIN_TYPE!r}")
    for key in ("serverSocket", "logFile", "logLevel"):
        if key in conf and not isinstance(conf[key], str):
            raise CniError(ERR_INVALID_CONFIG,
                           f"network config: {key} {conf[key]!r} must be a string")
    if "prevResult" in conf and not isinstance(conf["prevResult"], dict):
        raise CniError(ERR_INVALID_CONFIG,
                       f"network config: prevResult {_short(conf['prevResult'])} must be an "
                       "object")
    unknown = sorted(k for k in conf if k not in KNOWN_CONFIG_KEYS)
    if unknown:
        raise CniError(ERR_UNSUPPORTED_FIELD, "network config: unsupported field " + ", ".join(
            f"{k!r}={_short(conf[k])}" for k in unknown[:5]))
    return conf


def _short(value: object, limit: int = 100) -> str:
    """repr(value), cut to `limit` characters: errors quote hostile values."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _bad_chars(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS 'K=V;K=V' -> dict; CniError 4 on a malformed pair."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise CniError(ERR_INVALID_ENV,
                           f"CNI_ARGS {_short(text)}: {_short(part)} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    if out.get("IgnoreUnknown", "").lower() not in ("1", "true"):
        unknown = sorted(k for k in out if k not in KNOWN_CNI_ARGS)
        if unknown:
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: unknown argument "
                           f"{', '.join(map(repr, unknown[:5]))} (and no IgnoreUnknown=1)")
    return out


def check_env(env: dict[str, str]) -> str:
    """Check the CNI_* variables the command needs; return the command."""
    cmd = env.get("CNI_COMMAND", "")
    if cmd not in COMMANDS:
        raise CniError(ERR_INVALID_ENV, f"CNI_COMMAND {cmd!r} is not one of "
                       f"{', '.join(COMMANDS)}")
    if cmd in ("VERSION", "STATUS", "GC"):
        return cmd
    need = ["CNI_CONTAINERID", "CNI_IFNAME"] + (["CNI_NETNS"] if cmd != "DEL" else [])
    missing = [k for k in need if not env.get(k)]
    if missing:
        raise CniError(ERR_INVALID_ENV, f"{cmd}: required environment {', '.join(missing)} "
                       "not set")
    cid = env["CNI_CONTAINERID"]
    if not _CONTAINER_ID.fullmatch(cid) or len(cid) > 1024:
        raise CniError(ERR_INVALID_ENV, f"CNI_CONTAINERID {_short(cid)} is not a valid container "
                       "id (letters, digits, '_', '.', '-', starting with a letter or digit)")
    ifname = env["CNI_IFNAME"]
    if (len(ifname.encode("utf-8", "surrogatepass")) > 15 or ifname in (".", "..")
            or any(c in ifname for c in "/: ") or _bad_chars(ifname)
            or any(c.isspace() for c in ifname)):
        raise CniError(ERR_INVALID_ENV, f"CNI_IFNAME {_short(ifname)} is not a valid interface "
                       "name (1-15 bytes, no '/', ':', spaces or control characters)")
    netns = env.get("CNI_NETNS", "")
    if netns and (not netns.startswith("/") or _bad_chars(netns) or len(netns) > 4096):
        raise CniError(ERR_INVALID_ENV, f"CNI_NETNS {_short(netns)} is not an absolute path")
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    if cmd in ("ADD", "CHECK"):
        missing = [k for k in ("K8S_POD_NAMESPACE", "K8S_POD_NAME") if not args.get(k)]
        if missing:
            raise CniError(ERR_INVALID_ENV, f"{cmd}: CNI_ARGS {_short(env.get('CNI_ARGS', ''))} "
                           f"lacks {', '.join(missing)}")
    for key, pattern in (("K8S_POD_NAMESPACE", _DNS_LABEL), ("K8S_POD_NAME", _DNS_SUBDOMAIN)):
        if key in args and not pattern.fullmatch(args[key]):
            raise CniError(ERR_INVALID_ENV, f"CNI_ARGS: {key} {_short(args[key])} is not a "
                           "valid Kubernetes name")
    return cmd


def version_result(cni_version: str = "1.1.0") -> dict[str, Any]:
    return {"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)}


# --- logging (tiny on purpose: the shim runs once per pod) --------------------

class _Log:
    def __init__(self) -> None:
        self.path = DEFAULT_LOG_FILE
        self.lines: list[str] = []

    def __call__(self, level: str, msg: str) -> None:
        line = (f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level} {PLUGIN_TYPE}[{os.getpid()}] "
                f"{msg}")
        self.lines.append(line)
        sys.stderr.write(line + "\n")

    def flush(self) -> None:
        if not self.lines or not self.path:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            os.write(fd, ("\n".join(self.lines) + "\n").encode())
        finally:
            os.close(fd)
        self.lines.clear()


log = _Log()


# --- the call to the server ---------------------------------------------------

def post(sock_path: str, body: bytes, timeout: float = REPLY_TIMEOUT
         ) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 POST over a unix socket; (status, headers, body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(b"POST /cni HTTP/1.1\r\nHost: ovn-cni\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: " + str(len(body)).encode()
                  + b"\r\n\r\n" + body)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    finally:
        s.close()
    raw = b"".join(chunks)
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise OSError(f"bad HTTP answer from the CNI server: {lines[0]!r}") from None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, payload


def run(env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    """The whole plugin call; returns (exit status, JSON to print or None)."""
    cmd = env.get("CNI_COMMAND", "")
    version = "1.1.0"
    try:
        if cmd == "VERSION":
            # VERSION needs no config beyond an optional cniVersion.
            try:
                v = json.loads(stdin or b"{}").get("cniVersion", version)
            except (ValueError, AttributeError, RecursionError):
                v = version
            return 0, version_result(v if v in SUPPORTED_VERSIONS else version)
        cmd = check_env(env)
        conf = parse_config(stdin)  # also refuses a config over MAX_CONFIG_BYTES
        version = conf["cniVersion"]
        log.path = conf.get("logFile", DEFAULT_LOG_FILE)
        if cmd == "CHECK" and "prevResult" not in conf:
            raise CniError(ERR_INVALID_CONFIG, "CHECK: network config has no prevResult")
        sock_path = conf.get("serverSocket") or DEFAULT_SOCKET
        cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
        body = json.dumps({"env": cni_env, "config": stdin.decode()}).encode()
        who = f"{cmd} {env.get('CNI_CONTAINERID', '')} {env.get('CNI_ARGS', '')}".strip()
        log("INFO", f"{who}: calling the CNI server at {sock_path}")
        t0 = time.monotonic()
        try:
            status, headers, payload = post(sock_path, body)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            code = ERR_NOT_AVAILABLE if cmd == "STATUS" else ERR_TRY_AGAIN
            raise CniError(code, f"the ovnkube node CNI server at {sock_path} is not running "
                           f"({e.strerror}); try again later") from None
        except TimeoutError:
            raise CniError(ERR_TRY_AGAIN, f"no answer from the CNI server at {sock_path} "
                           f"within {REPLY_TIMEOUT:.0f}s") from None
        except OSError as e:
            raise CniError(ERR_IO, f"talking to the CNI server at {sock_path}: {e}") from None
        took = (time.monotonic() - t0) * 1000
        timings = headers.get("x-cni-timings", "")
        try:
            answer = json.loads(payload) if payload.strip() else None
        except ValueError:
            raise CniError(ERR_IO, f"the CNI server answered HTTP {status} with non-JSON: "
                           f"{payload[:200]!r}") from None
        if status >= 300:
            if not isinstance(answer, dict) or "code" not in answer:
                raise CniError(ERR_IO, f"the CNI server answered HTTP {status}: {answer!r}")
            err = CniError(int(answer["code"]), str(answer.get("msg", "")),
                           str(answer.get("details", "")))
            log("ERROR", f"{who}: failed in {took:.0f}ms: code {err.code}: {err.msg}")
            raise err
        log("INFO", f"{who}: done in {took:.0f}ms" + (f" ({timings})" if timings else ""))
        return 0, answer if isinstance(answer, dict) else None
    except CniError as e:
        if cmd != "VERSION":
            log("ERROR", f"{cmd}: code {e.code}: {e.msg}")
        return 1, e.to_json(version)


def main() -> int:
    try:
        stdin = sys.stdin.buffer.read()
    except OSError as e:
        stdin = b""
        log("ERROR", f"reading stdin: {e}")
    status, out = run(dict(os.environ), stdin)
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    log.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
