"""Faults of the control plane under load: the leading master killed with a
standby ready, and etcd with kube-apiserver killed and restarted
(tests/chaos.py has the workload and the invariants)."""

from __future__ import annotations

import time

import pytest

from localcluster import faults
from tests.chaos import Chaos, assert_survived, lease_holder
from tests.e2e_helpers import wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]


def test_leading_master_killed_standby_takes_over(chaos_cluster: Chaos) -> None:
    ch = chaos_cluster
    c = ch.c
    leader = faults.find(c, "ovnkube-master")
    holder = wait_for(lambda: lease_holder(ch.e), 60, "a lease holder")
    standby = faults.start_another(c, leader, "standby")
    # The standby runs and waits: the lease stays with the leader.
    time.sleep(5)
    assert faults.pid_alive(standby.pid)
    assert ch.leading_masters() == [holder]
    took: dict[str, float] = {}

    def fault() -> None:
        t0 = time.monotonic()
        faults.kill(c, leader)
        wait_for(lambda: lease_holder(ch.e) not in ("", holder), 90,
                 "the standby holding the lease")
        took["takeover_s"] = time.monotonic() - t0
        faults.start(c, leader)   # back, as the standby now

    res = ch.run_fault("leading master -9, standby takes over", fault)
    print(f"standby took over {took['takeover_s']:.1f} s after the kill "
          "(lease duration 15 s)")
    assert_survived(res)
    # The killed master came back as the standby, and does not lead.
    assert ch.leading_masters() == [lease_holder(ch.e)]


def test_etcd_and_apiserver_killed_and_restarted(chaos_cluster: Chaos) -> None:
    ch = chaos_cluster
    c = ch.c

    def fault() -> None:
        api, etcd = faults.find(c, "kube-apiserver"), faults.find(c, "etcd")
        faults.kill(c, api)
        faults.kill(c, etcd)
        time.sleep(5)
        faults.start(c, etcd)
        faults.start(c, api)
        wait_for(lambda: ch.e.kubectl("get", "--raw", "/readyz", timeout=10).strip() == "ok",
                 120, "the apiserver ready again")

    assert_survived(ch.run_fault("etcd and kube-apiserver -9, down 5 s", fault))
