"""Conntrack timeout policies that let OVN's timed session affinity work on
the userspace (netdev) datapath.

For a Service with sessionAffinity ClientIP and a timeout, OVN 23.03 learns a
new client's backend from the client's first SYN and then drops that SYN
(the `lb_aff_learn` stages end in a drop; upstream still does this). The SYN
has already been committed to conntrack, DNATed to the backend, in the
client port's zone (or the gateway router's DNAT zone). Its retransmits match
that SYN_SENT entry, are DNATed before the affinity check, miss the learned
affinity (which matches on the VIP) and are learned and dropped again, each
refreshing the entry: the first connection never gets through.

With SYN_SENT entries timing out after 1 s in OVN's zones, the dropped SYN's
entry is gone before the client's first retransmit (1 s later), which then
starts afresh, hits the learned affinity and reaches its backend. The cost:
a SYN answered more than 1 s later finds no entry (the client's retransmit,
a fresh connection, is then the one answered).

ovn-controller allocates zones as ports and routers appear and records them
in br-int's external_ids (`ct-zone-<name>`); this keeps a policy on each.
"""

from __future__ import annotations

import logging
import subprocess
import threading

from node.ovs import Ovs, vsctl

log = logging.getLogger(__name__)

DATAPATH = "netdev"
POLICY = {"tcp_syn_sent": "1"}


def zones_in_use(external_ids: dict[str, str]) -> set[int]:
    """Zones ovn-controller allocated, from br-int's external_ids."""
    out: set[int] = set()
    for k, v in external_ids.items():
        if k.startswith("ct-zone-"):
            try:
                out.add(int(v))
            except ValueError:
                continue
    return out


class ConntrackZonePolicies:
    def __init__(self, ovs: Ovs, ovs_db: str, bridge: str = "br-int",
                 interval: float = 0.5) -> None:
        self.ovs = ovs  # reads come from its IDL cache; writes go through ovs-vsctl
        self.ovs_db = ovs_db
        self.bridge = bridge
        self.interval = interval
        self.done: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _ensure_datapath(self) -> None:
        if vsctl(self.ovs_db, "--if-exists", "get", "Open_vSwitch", ".",
                 f"datapaths:{DATAPATH}").strip():
            return
        vsctl(self.ovs_db, "--", "--id=@dp", "create", "Datapath", "datapath_version=0",
              "--", "set", "Open_vSwitch", ".", f"datapaths:{DATAPATH}=@dp")

    def reconcile(self) -> int:
        """Add the policy to every zone in use that lacks it; the number added."""
        ids = self.ovs.bridge_external_ids(self.bridge)
        if ids is None:
            return 0  # br-int not there yet
        todo = sorted(zones_in_use(ids) - self.done)
        if not todo:
            return 0
        self._ensure_datapath()
        args: list[str] = []
        policy = [f"{k}={v}" for k, v in POLICY.items()]
        for z in todo:
            args += ["--", "--may-exist", "add-zone-tp", DATAPATH, f"zone={z}", *policy]
        vsctl(self.ovs_db, *args)
        self.done.update(todo)
        log.info("conntrack timeout policy %s on zones %s", POLICY, todo)
        return len(todo)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reconcile()
            except (subprocess.CalledProcessError, OSError, RuntimeError) as e:
                log.warning("conntrack zone policies: %s",
                            (getattr(e, "stderr", "") or str(e)).strip())

    def start(self) -> ConntrackZonePolicies:
        self._thread = threading.Thread(target=self._run, name="ct-zone-policies",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
