"""The layer rules of docs/DEVELOPMENT.md, checked over the source tree's
imports (so they cannot silently break):

- `northd_sync` knows OVN only: it imports nothing else of ours;
- `cni/` (the shim kubelet executes) imports nothing of ours beyond `cni`;
- the node agent never imports the master (`ovnkube.master`): they meet only
  through the Kubernetes API;
- product code never imports `localcluster`, `tests` or `bench`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("northd_sync", "ovnkube", "node", "cni", "localcluster", "tests", "bench")


def imports_of(path: Path) -> set[str]:
    """Modules of ours a file imports (at any depth: function-level imports too)."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            out.add(n.module)
    return {m for m in out if m.split(".")[0] in OURS}


def package_files(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


RULES = {
    "northd_sync": lambda m: m.split(".")[0] == "northd_sync",
    "cni": lambda m: m.split(".")[0] == "cni",
    "node": lambda m: m.split(".")[0] in ("node", "ovnkube", "cni")
    and not m.startswith("ovnkube.master"),
    "ovnkube": lambda m: m.split(".")[0] in ("ovnkube", "northd_sync"),
}


@pytest.mark.parametrize("pkg", sorted(RULES))
def test_layer_imports(pkg: str) -> None:
    allowed = RULES[pkg]
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in package_files(pkg)
           for m in sorted(imports_of(p)) if not allowed(m)]
    assert not bad, "\n".join(bad)


def test_the_rules_see_imports(tmp_path: Path) -> None:
    # The checker itself: module-level and function-level imports are found,
    # and a node module reaching into the master is refused.
    f = tmp_path / "agent.py"
    f.write_text("import json\nfrom ovnkube.config import Config\n"
                 "def f():\n    from ovnkube.master import netpol\n    import localcluster.kube\n")
    found = imports_of(f)
    assert found == {"ovnkube.config", "ovnkube.master", "localcluster.kube"}
    assert [m for m in sorted(found) if not RULES["node"](m)] == [
        "localcluster.kube", "ovnkube.master"]
