"""The layer rules of docs/DEVELOPMENT.md, checked over the source tree's
imports (so they cannot silently break):

- `northd_sync` knows OVN only: it imports nothing else of ours;
- `cni/` (the shim kubelet executes) imports nothing of ours beyond `cni`;
- the node agent never imports the master (`ovnkube.master`): they meet only
  through the Kubernetes API;
- product code never imports `localcluster`, `tests` or `bench`;
- no import cycles among our modules (module-level imports, `if
  TYPE_CHECKING:` ones included: a cycle there is a cycle of the design).
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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, known: set[str]) -> set[str]:
    """Our modules a file imports at module level (also under `if`, e.g.
    `if TYPE_CHECKING:`), not inside functions; `from pkg import mod` counts
    as importing `pkg.mod` when that is a module."""
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        n = todo.pop()
        if isinstance(n, ast.If | ast.Try):
            todo += [*n.body, *n.orelse, *getattr(n, "finalbody", []),
                     *(s for h in getattr(n, "handlers", []) for s in h.body)]
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            subs = {f"{n.module}.{a.name}" for a in n.names} & known
            out.update(subs or {n.module})
    return {m for m in out if m in known}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module
    (or a module importing itself), found by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    files = {module_name(p): p for pkg in OURS for p in package_files(pkg)}
    known = set(files)
    graph = {m: module_level_imports(p, known) - {m} for m, p in files.items()}
    cycles = import_cycles(graph)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_sees_cycles(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p import b\n"
                 "def f():\n    import p.c\n")
    assert module_level_imports(a, {"p.b", "p.c", "p"}) == {"p.b"}
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
