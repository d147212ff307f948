"""Install the CNI shim and the conflist kubelet reads, each atomically (write a
hidden temporary file in the same directory, then rename it into place)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from cni import shim

log = logging.getLogger(__name__)

CONFLIST_NAME = "10-ovn-kubernetes.conflist"
NETWORK_NAME = "ovn-kubernetes"


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot and a .tmp suffix: libcni only reads *.conf, *.conflist, *.json.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def shim_python(explicit: str = "") -> str:
    """The interpreter the installed shim runs with: the shim needs only the
    standard library, so the base interpreter (not the venv) is enough."""
    if explicit:
        return explicit
    return os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)


def install_shim(bin_dir: Path, python: str = "") -> Path:
    """Copy cni/shim.py into the bin dir as `ovn-k8s-cni-overlay`, started with
    `python -I -S` (isolated, no site: the fastest start-up)."""
    source = Path(shim.__file__).read_text()
    # One argument only: Linux passes everything after the interpreter as one.
    data = f"#!{shim_python(python)} -IS\n{source}".encode()
    target = bin_dir / shim.PLUGIN_TYPE
    _atomic_write(target, data, 0o755)
    log.info("installed CNI shim %s", target)
    return target


def conflist(socket_path: Path, log_file: str, mtu: int) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": NETWORK_NAME,
        "plugins": [{
            "type": shim.PLUGIN_TYPE,
            "serverSocket": str(socket_path),
            "logFile": log_file,
            "logLevel": "info",
            "mtu": mtu,
            "ipam": {},
            "dns": {},
        }],
    }


def installed_files(bin_dir: Path, conf_dir: Path) -> list[Path]:
    """What install_shim and install_conflist put on the node."""
    return [conf_dir / CONFLIST_NAME, bin_dir / shim.PLUGIN_TYPE]


def install_conflist(conf_dir: Path, socket_path: Path, log_file: str, mtu: int) -> Path:
    target = conf_dir / CONFLIST_NAME
    data = json.dumps(conflist(socket_path, log_file, mtu), indent=2).encode() + b"\n"
    _atomic_write(target, data, 0o644)
    log.info("installed CNI config %s", target)
    return target
