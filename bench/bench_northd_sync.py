"""Benchmark northd_sync against raw ovsdbapp (the ceiling).

    python bench/bench_northd_sync.py [--ports 10000] [--switches 100] [--repeat 2]
                                      [--keep-northd] [--profile FILE]

Starts its own OVN central (NB/SB ovsdb-servers and ovn-northd) in a temp dir
and removes it afterwards. By default ovn-northd is stopped once the central is
up, so that its reaction to 10,000 new ports does not compete for the CPU
with what is measured (--keep-northd keeps it).

Phases, each timed with rows/s:
  ceiling  one ovsdbapp transaction: ls_add x switches + lsp_add x ports (with
           addresses and the same external_ids), then one deleting them all
  create   engine: one apply per switch (owner node/<sw>) and one per port
           (owner pod/ns/<p>), all queued at once, waited for
  sync     engine: full no-op sync of both owner types (must write nothing)
  delete   engine: delete every owner
Wall times depend on what else the machine runs; "client CPU" is the CPU time
this process (all threads) spent in the phase, a steadier figure.
Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl

from localcluster.ovn import OvnCentral
from northd_sync import (
    ApplyResult,
    LogicalSwitch,
    LogicalSwitchPort,
    NorthdSync,
    Owner,
    Row,
)
from northd_sync.rows import ID_KEY, OWNER_KEY, OWNER_TYPE_KEY


def mac_ip(i: int) -> str:
    a, b = 1 + i // 250, 2 + i % 250
    return f"0a:58:0a:f4:{a:02x}:{b:02x} 10.244.{a}.{b}"


def workload(ports: int, switches: int) -> tuple[list[str], list[tuple[str, str, str]]]:
    sws = [f"node{i}" for i in range(switches)]
    lsps = [(f"ns_pod{i}", sws[i % switches], mac_ip(i)) for i in range(ports)]
    return sws, lsps


def ext(owner_type: str, owner: str, key: str) -> dict[str, str]:
    return {OWNER_TYPE_KEY: owner_type, OWNER_KEY: owner, ID_KEY: key}


CPU: dict[str, float] = {}


def timed(fn: Callable[[], Any], label: str = "") -> tuple[float, Any]:
    """Wall time of fn(); this process' CPU time (all threads) goes to CPU[label]."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    if label:
        cpu = time.process_time() - c0
        CPU[label] = min(cpu, CPU.get(label, cpu))
    return wall, out


def run_ceiling(remote: str, sws: list[str], lsps: list[tuple[str, str, str]]
                ) -> dict[str, float]:
    cls = type("BenchNbApi", (impl_idl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
    idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
    conn = connection.Connection(idl, timeout=600)
    api = cls(conn)
    try:
        def create() -> None:
            with api.transaction(check_error=True) as txn:
                for s in sws:
                    txn.add(api.ls_add(s, external_ids=ext("node", s, s)))
                for name, sw, addr in lsps:
                    txn.add(api.lsp_add(sw, name, addresses=[addr], port_security=[addr],
                                        external_ids=ext("pod", f"ns/{name}", name)))

        def delete() -> None:
            with api.transaction(check_error=True) as txn:
                for name, _sw, _ in lsps:
                    txn.add(api.lsp_del(name, switch=_sw))
                for s in sws:
                    txn.add(api.ls_del(s))

        t_create, _ = timed(create, "ceiling create")
        assert len(api.tables["Logical_Switch_Port"].rows) == len(lsps)
        t_delete, _ = timed(delete, "ceiling delete")
        assert not api.tables["Logical_Switch_Port"].rows
    finally:
        conn.stop()
    return {"create": t_create, "delete": t_delete}


class ProfiledSync(NorthdSync):
    """Profiles the writer thread, where the engine's work happens."""

    profile: cProfile.Profile | None = None

    def _run(self) -> None:
        if self.profile is None:
            super()._run()
            return
        self.profile.enable()
        try:
            super()._run()
        finally:
            self.profile.disable()


def run_engine(remote: str, sws: list[str], lsps: list[tuple[str, str, str]],
               profile: cProfile.Profile | None) -> dict[str, Any]:
    nb = ProfiledSync(remote, timeout=600)
    nb.profile = profile
    nb.start()
    try:
        nodes: dict[str, list[Row]] = {s: [LogicalSwitch(s)] for s in sws}
        pods: dict[str, list[Row]] = {
            f"ns/{n}": [LogicalSwitchPort(n, sw, addresses=[a], port_security=[a])]
            for n, sw, a in lsps}
        c0 = nb.counters()

        def create() -> list[ApplyResult]:
            futs: list[Future[ApplyResult]] = []
            for s, rows in nodes.items():
                futs.append(nb.apply(Owner("node", s), rows, wait=False))
            for p, rows in pods.items():
                futs.append(nb.apply(Owner("pod", p), rows, wait=False))
            return [f.result() for f in futs]

        t_create, res = timed(create, "engine create")
        assert sum(r.inserted for r in res) == len(sws) + len(lsps), "not everything created"
        c1 = nb.counters()

        def sync() -> tuple[Any, Any]:
            return nb.sync("node", nodes), nb.sync("pod", pods)

        t_sync, reports = timed(sync, "engine sync")
        assert all(r.clean for r in reports), [str(r) for r in reports]
        c2 = nb.counters()

        def delete() -> list[ApplyResult]:
            futs = [nb.delete(Owner("pod", p), wait=False) for p in pods]
            futs += [nb.delete(Owner("node", s), wait=False) for s in nodes]
            return [f.result() for f in futs]

        t_delete, res = timed(delete, "engine delete")
        assert sum(r.deleted for r in res) == len(sws) + len(lsps), "not everything deleted"
        c3 = nb.counters()
    finally:
        nb.stop()
    return {"create": t_create, "sync": t_sync, "delete": t_delete,
            "create_txns": c1["transactions"] - c0["transactions"],
            "sync_txns": c2["transactions"] - c1["transactions"],
            "delete_txns": c3["transactions"] - c2["transactions"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=10000)
    ap.add_argument("--switches", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="runs; the best of each is shown")
    ap.add_argument("--keep-northd", action="store_true")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the engine's writer thread")
    args = ap.parse_args()

    sws, lsps = workload(args.ports, args.switches)
    rows = len(sws) + len(lsps)
    d = Path(tempfile.mkdtemp(prefix="ovk-bench-", dir="/tmp"))
    central = OvnCentral(d / "central")
    profile = cProfile.Profile() if args.profile else None
    best_c: dict[str, float] = {}
    best_e: dict[str, Any] = {}
    try:
        central.start()
        if not args.keep_northd:
            central.daemon("ovn-northd").stop()
        for _ in range(args.repeat):
            c = run_ceiling(central.nb_unix, sws, lsps)
            e = run_engine(central.nb_unix, sws, lsps, profile)
            for k, v in c.items():
                best_c[k] = min(v, best_c.get(k, v))
            for k, v in e.items():
                best_e[k] = min(v, best_e.get(k, v))
    finally:
        central.stop()
        shutil.rmtree(d, ignore_errors=True)

    print(f"northd_sync benchmark: {len(lsps)} LSPs with addresses on {len(sws)} switches "
          f"({rows} rows), best of {args.repeat}, ovn-northd "
          f"{'running' if args.keep_northd else 'stopped'}")
    print(f"{'phase':<8} {'engine s':>9} {'rows/s':>9} {'ceiling s':>10} {'rows/s':>9} "
          f"{'ratio':>6} {'txns':>5} {'client CPU s engine/ceiling':>28}")
    for phase in ("create", "sync", "delete"):
        te = best_e[phase]
        line = f"{phase:<8} {te:>9.3f} {rows / te:>9.0f}"
        if phase in best_c:
            tc = best_c[phase]
            line += f" {tc:>10.3f} {rows / tc:>9.0f} {tc / te:>5.2f}x"
        else:
            line += f" {'-':>10} {'-':>9} {'-':>6}"
        line += f" {best_e[phase + '_txns']:>5}"
        cpu_c = CPU.get(f"ceiling {phase}")
        line += f" {CPU[f'engine {phase}']:>13.3f} / " + (f"{cpu_c:.3f}" if cpu_c else "-")
        print(line)
    print(f"targets: create >= 0.70x ceiling: {best_c['create'] / best_e['create']:.2f}x; "
          f"no-op sync < 1 s: {best_e['sync']:.3f} s with {best_e['sync_txns']} write "
          "transactions")
    if profile is not None:
        profile.dump_stats(args.profile)
        print(f"\nprofile of the writer thread saved to {args.profile}; top 25 by own time:")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
