"""Faults of a node's own daemons under load: the node agent, ovn-controller
and ovs-vswitchd killed (-9) and started again; running pods keep their
traffic (tests/chaos.py has the workload and the invariants; the stream's
longest gap is measured, not bounded: the scale-up alone costs it seconds on
this machine, see docs/RELIABILITY.md)."""

from __future__ import annotations

import time

import pytest

from localcluster import faults
from tests.chaos import Chaos, assert_survived

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

def kill_for(ch: Chaos, name: str, down_for: float) -> None:
    node = ch.e.nodes[0]
    rec = faults.find(ch.c, name, node)
    faults.kill(ch.c, rec)
    time.sleep(down_for)
    faults.start(ch.c, rec)


def test_node_agent_killed_and_restarted(chaos_cluster: Chaos) -> None:
    res = chaos_cluster.run_fault("ovnkube-node -9 on a worker, down 5 s",
                                  lambda: kill_for(chaos_cluster, "ovnkube-node", 5))
    assert_survived(res)


def test_ovn_controller_killed_and_restarted(chaos_cluster: Chaos) -> None:
    res = chaos_cluster.run_fault("ovn-controller -9 on a worker, down 5 s",
                                  lambda: kill_for(chaos_cluster, "ovn-controller", 5))
    assert_survived(res)


def test_vswitchd_killed_and_restarted(chaos_cluster: Chaos) -> None:
    # The data path itself goes: the worker's pods have no network until it is
    # back and ovn-controller has put the flows in again.
    assert_survived(chaos_cluster.run_fault(
        "ovs-vswitchd -9 on a worker, down 2 s",
        lambda: kill_for(chaos_cluster, "ovs-vswitchd", 2)))


def test_worker_restarted(chaos_cluster: Chaos) -> None:
    # A power cut: all of the worker's processes, its pods' namespaces and
    # its datapath devices go; it boots again and its pods come back with
    # networking (the client streams from the other worker).
    assert_survived(chaos_cluster.run_fault(
        "a worker restarted (all its processes), down 2 s",
        lambda: faults.restart_node(chaos_cluster.c, chaos_cluster.e.nodes[0])))
