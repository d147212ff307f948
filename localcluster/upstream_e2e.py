"""Run the Kubernetes project's own network e2e suite on a fresh ovnkube-local.

    python -m localcluster.upstream_e2e [--set conformance|services|netpol|network]
        [--nodes 2] [--procs N] [--report-dir DIR] [--focus REGEX] [--skip REGEX] [--keep]

The suite binary is upstream's TestMain and RunE2ETests with only the network
test packages (hack/build-e2e.sh builds it). It runs from the underlay
namespace, "outside" the cluster like a CI runner next to a kind cluster: it
reaches the apiserver and the nodes by their addresses. Prints ginkgo's
summary, then one line `N passed, N failed, N skipped`; the JUnit report is
written to the report dir. With `--procs N` the ginkgo CLI (built beside
the suite) runs N suite processes in parallel, as upstream's CI does; the
specs it runs are the same ([Serial] ones are skipped in every set).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from localcluster import dns
from localcluster.cluster import Cluster
from localcluster.kube import kube_bin, kube_bin_dir

ROOT = Path(__file__).resolve().parent.parent
SUITE = "e2e-network.test"

# Each set: (focus, skip). Skips name what one machine cannot have; the
# reasons are in docs/E2E.md. Unless asked, the suite itself skips
# [Feature:...] tests; the netpol set asks for [Feature:NetworkPolicy].
SKIP = (r"\[Disruptive\]|\[Serial\]|\[Flaky\]|IPv6|SCTP|LoadBalancer|DualStack|"
        r"\[Feature:(Networking-IPv6|SCTPConnectivity|Ingress|NEG|Example)")
NO_FEATURES = SKIP + r"|\[Feature:"
SETS = {
    "conformance": (r"\[sig-network\].*\[Conformance\]", NO_FEATURES),
    "granular": (r"\[sig-network\] Networking Granular Checks: Pods", NO_FEATURES),
    "services": (r"\[sig-network\] Services .*\[Conformance\]", NO_FEATURES),
    "netpol": (r"\[sig-network\] Netpol ", SKIP),
    "network": (r"\[sig-network\]", NO_FEATURES),
}


def suite_binary() -> Path:
    path = kube_bin_dir() / SUITE
    if not path.exists() or not (kube_bin_dir() / "ginkgo").exists():
        subprocess.run(["bash", str(ROOT / "hack" / "build-e2e.sh")], check=True)
    return path


def junit_counts(report_dir: Path) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for f in report_dir.glob("junit*.xml"):
        for case in ET.parse(f).getroot().iter("testcase"):
            if not str(case.get("name", "")).startswith("[It]"):
                continue  # suite set-up and report nodes are not tests
            if case.find("skipped") is not None:
                skipped += 1
            elif case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            else:
                passed += 1
    return passed, failed, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="upstream_e2e", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=sorted(SETS), default="conformance")
    ap.add_argument("--focus", help="a ginkgo focus regex instead of the set's")
    ap.add_argument("--skip", help="a ginkgo skip regex instead of the set's")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--procs", type=int, default=1,
                    help="parallel suite processes (the ginkgo CLI), default 1")
    ap.add_argument("--report-dir", type=Path, default=Path("_output/e2e"))
    ap.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    a = ap.parse_args(argv)
    if not 1 <= a.procs <= 16:
        ap.error(f"--procs {a.procs}: want 1 to 16")
    focus, skip = SETS[a.set]
    focus, skip = a.focus or focus, a.skip or skip
    binary = suite_binary()
    shutil.rmtree(a.report_dir, ignore_errors=True)  # the last run's report and dumps
    a.report_dir.mkdir(parents=True)
    c = Cluster.create(f"up{secrets.token_hex(2)}", a.nodes,
                       lambda m: print("   " + m, flush=True))
    try:
        suite_args = ["--provider=skeleton", f"--kubeconfig={c.s.inner_kubeconfig}",
                      f"--kubectl-path={kube_bin('kubectl')}",
                      f"--dns-domain={dns.CLUSTER_DOMAIN}",
                      f"--report-dir={a.report_dir.resolve()}",
                      # kind's e2e passes its worker count: specs that need
                      # N nodes skip themselves without it
                      f"--num-nodes={a.nodes}",
                      "--allowed-not-ready-nodes=0", "--node-os-distro=debian"]
        ginkgo_args = [f"focus={focus}", f"skip={skip}", "no-color", "timeout=3h", "v"]
        if a.procs == 1:
            run = [str(binary), *(f"--ginkgo.{g}" for g in ginkgo_args), *suite_args]
        else:
            run = [str(kube_bin("ginkgo")), f"--procs={a.procs}",
                   *(f"--{g}" for g in ginkgo_args), str(binary), "--", *suite_args]
        cmd = ["ip", "netns", "exec", c.s.netns("ul"), *run]
        print("running:", " ".join(run), flush=True)
        rc = subprocess.run(cmd).returncode
        passed, failed, skipped = junit_counts(a.report_dir)
        print(f"{passed} passed, {failed} failed, {skipped} skipped "
              f"(JUnit in {a.report_dir})", flush=True)
        return rc
    finally:
        if a.keep:
            print(f"cluster {c.s.name} kept: ovnkube-local down --name {c.s.name}")
        else:
            c.down()


if __name__ == "__main__":
    sys.exit(main())
