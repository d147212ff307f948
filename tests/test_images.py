"""The image map: references normalised as runtimes do, command/args combined
with the image's entrypoint and cmd as Kubernetes does, user maps, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster.images import ImageError, argv_for, load_map, program_files, repository

REPO = Path(__file__).resolve().parent.parent

PY = "/venv/bin/python"
AGNHOST = [PY, "-m", "localcluster.agnhost"]


@pytest.mark.parametrize("ref,repo", [
    ("busybox", "docker.io/library/busybox"),
    ("busybox:1.36", "docker.io/library/busybox"),
    ("docker.io/library/busybox:latest", "docker.io/library/busybox"),
    ("library/busybox", "docker.io/library/busybox"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause"),
    ("registry.k8s.io/e2e-test-images/agnhost@sha256:abcd",
     "registry.k8s.io/e2e-test-images/agnhost"),
    ("localhost:5000/web:1", "localhost:5000/web"),
    ("quay.io/x/y", "quay.io/x/y"),
])
def test_repository(ref: str, repo: str) -> None:
    assert repository(ref) == repo


def run(ref: str, command: list[str] | None = None, args: list[str] | None = None,
        env: dict[str, str] | None = None) -> list[str]:
    return argv_for(ref, command or [], args or [], PY, load_map(env or {}))


def test_command_and_args_combine_as_in_kubernetes() -> None:
    # busybox: ENTRYPOINT [], CMD ["sh"]
    assert run("busybox") == ["sh"]
    assert run("busybox", args=["sleep", "3600"]) == ["sleep", "3600"]  # kubectl run -- ...
    assert run("busybox:1.36", command=["sh", "-c"], args=["echo hi"]) == ["sh", "-c", "echo hi"]
    assert run("busybox", command=["sleep"]) == ["sleep"]  # command alone drops CMD
    # agnhost: ENTRYPOINT /agnhost, CMD pause
    agn = "registry.k8s.io/e2e-test-images/agnhost:2.53"
    assert run(agn) == [*AGNHOST, "pause"]
    assert run(agn, args=["netexec", "--http-port=80"]) == [*AGNHOST, "netexec", "--http-port=80"]
    assert run(agn, command=["/agnhost", "serve-hostname"], args=["--tcp"]) == [
        *AGNHOST, "serve-hostname", "--tcp"]
    assert run(agn, command=["sh", "-c", "x"]) == ["sh", "-c", "x"]
    # The agnhost image carries CoreDNS too (upstream's DNS tests run it).
    (coredns, *rest) = run(agn, command=["/coredns"], args=["-conf", "/etc/coredns/Corefile"])
    assert coredns.endswith("/bin/coredns") and rest == ["-conf", "/etc/coredns/Corefile"]
    assert run("registry.k8s.io/pause:3.10") == [*AGNHOST, "pause"]


def test_unknown_image_names_itself_and_the_map() -> None:
    with pytest.raises(ImageError, match=r'"nginx:1.27" is not in the image map \(.*images.json'):
        run("nginx:1.27", command=["nginx"])


def test_user_map_adds_and_overrides(tmp_path: Path) -> None:
    user = tmp_path / "mine.json"
    user.write_text(json.dumps({"images": {
        "example.com/tools": {"entrypoint": ["/usr/bin/env"], "cmd": ["true"]},
        "busybox": {"entrypoint": ["busybox"], "cmd": ["sh"]}}}))
    env = {"OVNKUBE_LOCAL_IMAGES": str(user)}
    assert run("example.com/tools:v1", env=env) == ["/usr/bin/env", "true"]
    assert run("busybox", args=["ls"], env=env) == ["busybox", "ls"]
    user.write_text(json.dumps({"images": {"x": {"cmd": "sh"}}}))
    with pytest.raises(ImageError, match=r"x\.cmd: expected a list of strings"):
        load_map(env)
    with pytest.raises(ImageError, match="OVNKUBE_LOCAL_IMAGES=/nonexistent"):
        load_map({"OVNKUBE_LOCAL_IMAGES": "/nonexistent"})


def test_programs_at_absolute_paths_become_scripts_for_the_container(tmp_path: Path) -> None:
    files = {c: h for h, c in program_files(
        "registry.k8s.io/e2e-test-images/agnhost:2.53", sys.executable, load_map({}), tmp_path)}
    assert set(files) == {"/agnhost", "/coredns"}  # not the PATH name "agnhost"
    out = subprocess.run([files["/agnhost"], "connect", "--help"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "--timeout" in out.stdout + out.stderr
    assert program_files("busybox", PY, load_map({}), tmp_path) == []
