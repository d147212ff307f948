"""Static checks, no cluster: the image's Dockerfile and hack/install-deps.sh
install one list of Debian packages (hack/debian-packages.txt), the chart's
values.schema.json rejects bad values by name (real helm), and NOTES.txt
renders the commands that check an install."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.kube import kube_bin

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "ovn-kubernetes-py"
PACKAGES = ROOT / "hack" / "debian-packages.txt"
DOCKERFILE = ROOT / "Dockerfile"
INSTALL_DEPS = ROOT / "hack" / "install-deps.sh"
REQUIRED_VALUES = {"kubernetes.apiServerHost": "172.18.0.2", "ovn.centralNode": "n1",
                   "ovn.centralIP": "172.18.0.2"}


def sets(values: dict[str, str]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


REQUIRED = sets(REQUIRED_VALUES)
SCHEMA_ERROR = "values don't meet the specifications of the schema"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([kube_bin("helm"), *args], capture_output=True, text=True,
                          timeout=60)


def package_list() -> list[str]:
    """hack/debian-packages.txt as its readers must read it."""
    names = []
    for line in PACKAGES.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def shell_lines(text: str) -> list[str]:
    """Logical lines: comment lines dropped, backslash continuations joined."""
    out: list[str] = []
    cont = False
    for raw in text.splitlines():
        line = raw.strip()
        if not cont and (not line or line.startswith("#")):
            continue
        if cont:
            out[-1] += " " + line.removesuffix("\\").strip()
        else:
            out.append(line.removesuffix("\\").strip())
        cont = line.endswith("\\")
    return out


def dockerfile_instructions() -> list[tuple[str, str]]:
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "")
            for ln in shell_lines(DOCKERFILE.read_text())]


# --- one Debian package list -------------------------------------------------

def test_package_list_is_plain() -> None:
    names = package_list()
    assert {"openvswitch-switch", "ovn-central", "ovn-host", "iproute2",
            "nftables"} <= set(names)
    assert len(names) == len(set(names)), "a package is listed twice"
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", n) for n in names), names
    assert "install-deps.sh" in PACKAGES.read_text() and "Dockerfile" in PACKAGES.read_text()


def test_install_deps_reads_the_list() -> None:
    text = INSTALL_DEPS.read_text()
    lines = shell_lines(text)
    assigned = [ln for ln in lines if re.search(r"\bAPT_PACKAGES\+?=", ln)]
    assert not assigned, f"install-deps.sh states packages itself: {assigned}"
    (read,) = [ln for ln in lines if ln.startswith("mapfile -t APT_PACKAGES")]
    assert "hack/debian-packages.txt" in read
    # The statement itself, run by bash in the repository, reads the file's list.
    res = subprocess.run(["bash", "-c", f'set -euo pipefail; {read}; '
                          'printf "%s\\n" "${APT_PACKAGES[@]}"'],
                         cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert res.stdout.splitlines() == package_list()
    # ... and only that list is installed.
    (install,) = [ln for ln in lines if "apt-get install" in ln]
    words = [w for w in install.split("apt-get install", 1)[1].split()
             if not w.startswith(("-", ">", "2>"))]
    assert words == ['"${missing[@]}"'], install
    assert 'for p in "${APT_PACKAGES[@]}"; do' in lines


def test_dockerfile_installs_exactly_the_list() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "debian:12")
    assert "ENTRYPOINT" not in {op for op, _ in instructions}
    (dest,) = [arg.split()[1] for op, arg in instructions
               if op == "COPY" and arg.split()[0] == "hack/debian-packages.txt"]
    (run,) = [arg for op, arg in instructions if op == "RUN" and "apt-get install" in arg]
    # apt-get install's packages: python3 and one variable, read from the copied file.
    words = [w for w in run.split("apt-get install", 1)[1].split(";", 1)[0].split()
             if not w.startswith("-")]
    variables = [w for w in words if w.startswith("$")]
    assert len(variables) == 1, words
    assert set(words) - set(variables) <= {"python3"}, words
    var = variables[0].strip("${}\"")
    m = re.search(rf"\b{var}=\$\(([^()]*)\)", run)
    assert m, f"${var} is not assigned in the RUN that installs it"
    reader = m.group(1)
    assert reader.split()[0] == "sed" and dest in reader, reader
    res = subprocess.run(["sh", "-c", reader.replace(dest, str(PACKAGES))], capture_output=True,
                         text=True, timeout=30, check=True)
    assert res.stdout.split() == package_list()
    # No package of the list is named in the Dockerfile a second time.
    body = " ".join(arg for _, arg in instructions)
    named = [n for n in package_list() if re.search(rf"(?<![\w./-]){re.escape(n)}(?![\w.-])",
                                                    body)]
    assert not named, f"the Dockerfile names packages of hack/debian-packages.txt: {named}"


def test_dockerfile_installs_the_project_on_path() -> None:
    instructions = dockerfile_instructions()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    assert image.startswith("ovnkube-py:")
    header = " ".join(ln.lstrip("# ") for ln in DOCKERFILE.read_text().splitlines()
                      if ln.startswith("#"))
    assert f"docker build -t {image} ." in header
    assert "no container engine" in header
    env = dict(arg.split("=", 1) for op, arg in instructions if op == "ENV")
    venv = env["VIRTUAL_ENV"]
    assert env["PATH"] == f"{venv}/bin:$PATH"
    # The RUNs, their quotes dropped and $VIRTUAL_ENV expanded.
    runs = " ".join(arg for op, arg in instructions if op == "RUN")
    runs = runs.replace('"', "").replace("$VIRTUAL_ENV", venv)
    (src,) = [arg.split()[1] for op, arg in instructions if op == "COPY" and arg.split()[0] == "."]
    assert f"python3 -m venv {venv};" in runs
    assert re.search(rf"{re.escape(venv)}/bin/python -m pip install [^;]*{re.escape(src)};", runs)
    # What the chart's containers run: the package's console scripts (on PATH
    # from the venv) or Debian's programs, never a path into the image.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"ovnkube", "ovn-k8s-cni-overlay"} <= set(scripts)
    res = helm("template", "t", str(CHART), *REQUIRED)
    assert res.returncode == 0, res.stderr
    commands = {c["command"][0] for d in yaml.safe_load_all(res.stdout) if d
                for c in d.get("spec", {}).get("template", {}).get("spec", {}).get(
                    "containers", []) if c.get("command")}
    assert "ovnkube" in commands
    assert all(c in scripts for c in commands if c.startswith(("ovnkube", "ovn-k8s"))), commands
    assert not [c for c in commands if c.startswith("/") and not c.startswith("/bin/")], commands


# --- values.schema.json ------------------------------------------------------

def test_schema_covers_every_value() -> None:
    """Every key of values.yaml has its schema, and every object rejects
    unknown keys; the schema's only key beyond values.yaml is ovn.dbReplicas."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        out = set()
        for k, v in node.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, f"{prefix}{k}.")
        return out

    def schema_keys(node: dict[str, Any], prefix: str = "") -> set[str]:
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, prefix or "(top)"
        out = set()
        for k, v in node.get("properties", {}).items():
            out.add(prefix + k)
            out |= schema_keys(v, f"{prefix}{k}.")
        return out

    assert keys(values) <= schema_keys(schema)
    assert schema_keys(schema) - keys(values) <= {"ovn.dbReplicas"}
    assert schema["properties"]["ovn"]["properties"]["dbReplicas"]["enum"] == [1, 3]


def schema_errors(stderr: str) -> set[str]:
    """The values helm's schema check names: `- at '/cluster/mtu': ...` lines."""
    return set(re.findall(r"^\s*- at '([^']*)': (?!validation failed)", stderr, re.M))


@pytest.mark.parametrize(("args", "pointer", "why"), [
    (["--set", "cluster.subnets=notacidr"], "/cluster/subnets",
     "'notacidr' does not match pattern"),
    (["--set-string", r"cluster.subnets=10.244.0.0/16/24\,10.245.0.0/16/33"],
     "/cluster/subnets", "'10.244.0.0/16/24,10.245.0.0/16/33' does not match pattern"),
    (["--set", "cluster.serviceCIDR=10.96.0.0"], "/cluster/serviceCIDR",
     "'10.96.0.0' does not match pattern"),
    (["--set", "cluster.mtu=70"], "/cluster/mtu", "minimum: got 70, want 576"),
    (["--set", "cluster.mtu=1400x"], "/cluster/mtu", "got string, want integer"),
    (["--set", "node.datapathType=kernel"], "/node/datapathType",
     "value must be one of 'system', 'netdev'"),
    (["--set", "node.gatewayNexthop=1.2.3"], "/node/gatewayNexthop",
     "'1.2.3' does not match pattern"),
    (["--set", "node.cniConfDir=etc/cni/net.d"], "/node/cniConfDir",
     "'etc/cni/net.d' does not match pattern '^/'"),
    (["--set", "node.ovsInPod=yes"], "/node/ovsInPod", "got string, want boolean"),
    (["--set", "ovn.dbReplicas=2"], "/ovn/dbReplicas", "value must be one of 1, 3"),
    (["--set", "ovn.centralIP=n1"], "/ovn/centralIP", "'n1' does not match pattern"),
    (["--set", "logLevel=trace"], "/logLevel", "value must be one of"),
    (["--set", "master.metricsPort=70000"], "/master/metricsPort", "maximum"),
    (["--set", "kubernetes.apiServerHost="], "/kubernetes/apiServerHost",
     "minLength: got 0, want 1"),
    (["--set", "cluster.mtuu=1400"], "/cluster", "additional properties 'mtuu' not allowed"),
    (["--set", "namespce=x"], "", "additional properties 'namespce' not allowed"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_value_fails_naming_it(args: list[str], pointer: str, why: str) -> None:
    res = helm("template", "t", str(CHART), *REQUIRED, *args)
    assert res.returncode != 0, res.stdout[:300]
    assert SCHEMA_ERROR in res.stderr, res.stderr
    assert schema_errors(res.stderr) == {pointer}, res.stderr
    assert f"- at '{pointer}': {why}" in res.stderr, res.stderr


def test_required_values_missing_fail_naming_them() -> None:
    no_host = {k: v for k, v in REQUIRED_VALUES.items() if k != "kubernetes.apiServerHost"}
    res = helm("template", "t", str(CHART), *sets(no_host))
    assert res.returncode != 0
    assert schema_errors(res.stderr) == {"/kubernetes/apiServerHost"}, res.stderr
    assert "- at '/kubernetes/apiServerHost': minLength: got 0, want 1" in res.stderr
    res = helm("template", "t", str(CHART))
    assert res.returncode != 0
    assert schema_errors(res.stderr) == {"/kubernetes/apiServerHost", "/ovn/centralNode",
                                         "/ovn/centralIP"}, res.stderr


@pytest.mark.parametrize("args", [
    [],
    ["--set", "kubernetes.apiServerHost=api.example.com", "--set", "ovn.dbReplicas=1"],
    ["--set", "kubernetes.apiServerHost=fd00::2", "--set", "node.gatewayNexthop=fd00::1"],
    ["--set-string", r"cluster.subnets=10.244.0.0/16/24\,fd00:10:244::/48/64",
     "--set-string", r"cluster.serviceCIDR=10.96.0.0/16\,fd00:10:96::/112"],
    ["--set", "cluster.subnets=10.244.0.0/16", "--set", "cluster.mtu=9000",
     "--set", "node.datapathType=netdev", "--set", "node.gatewayInterface=",
     "--set", "node.ovsInPod=false", "--set", "logLevel=debug",
     "--set", "image.tag=1.2"],
], ids=lambda v: " ".join(v) or "defaults")
def test_good_values_render(args: list[str]) -> None:
    res = helm("template", "t", str(CHART), *REQUIRED, *args)
    assert res.returncode == 0, res.stderr
    kinds = {(d["kind"], d["metadata"]["name"])
             for d in yaml.safe_load_all(res.stdout) if d}
    assert {("Deployment", "ovnkube-master"), ("DaemonSet", "ovnkube-node")} <= kinds


def test_lint_with_the_schema() -> None:
    res = helm("lint", str(CHART), *REQUIRED)
    assert res.returncode == 0, res.stdout + res.stderr


# --- NOTES.txt -----------------------------------------------------------------

def render_notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` would print it. helm template renders NOTES
    but never prints it, and `helm install --dry-run=client` still asks a
    cluster (the storage, reachability) before it renders. So a copy of the
    chart gets NOTES.txt rendered by tpl, with the same values, into a
    ConfigMap that helm template prints."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "NOTES.txt")
    (chart / "templates" / "zz-notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes-probe}\n"
        'data:\n  notes: {{ tpl (.Files.Get "NOTES.txt") . | toJson }}\n')
    res = helm("template", "t", str(chart), *REQUIRED, *args,
               "--show-only", "templates/zz-notes-probe.yaml")
    assert res.returncode == 0, res.stderr
    notes = yaml.safe_load(res.stdout)["data"]["notes"]
    assert isinstance(notes, str)
    return notes


def test_notes_name_the_namespace_and_the_commands(tmp_path: Path) -> None:
    notes = render_notes(tmp_path, "-n", "ovnk-test",
                         "--set", "node.cniConfDir=/etc/cni/other.d")
    assert "<no value>" not in notes
    assert "kubectl -n ovnk-test get pods -o wide" in notes
    assert "kubectl get nodes" in notes
    assert "/etc/cni/other.d/10-ovn-kubernetes.conflist" in notes
    assert ("kubectl -n ovnk-test exec deploy/ovnkube-db -c nb-ovsdb -- "
            "ovn-nbctl --db=unix:/var/run/ovn/ovnnb_db.sock show") in notes
    assert ("kubectl -n ovnk-test exec deploy/ovnkube-db -c sb-ovsdb -- "
            "ovn-sbctl --db=unix:/var/run/ovn/ovnsb_db.sock show") in notes
    assert "-n default" not in notes
    assert len(notes.splitlines()) <= 20


def test_notes_commands_match_the_chart() -> None:
    """The Deployment and containers NOTES.txt execs into are the chart's."""
    res = helm("template", "t", str(CHART), "-n", "ovnk-test", *REQUIRED)
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    (db,) = [d for d in docs if d["kind"] == "Deployment"
             and d["metadata"]["name"] == "ovnkube-db"]
    containers = db["spec"]["template"]["spec"]["containers"]
    assert {"nb-ovsdb", "sb-ovsdb"} <= {c["name"] for c in containers}
    sockets = " ".join(str(c.get("args", "")) for c in containers)
    assert "/var/run/ovn/ovnnb_db.sock" in sockets and "/var/run/ovn/ovnsb_db.sock" in sockets
    assert db["metadata"]["namespace"] == "ovnk-test"
