"""Faults of OVN central under load: the NB and SB ovsdb-servers and
ovn-northd killed (-9) while a Deployment scales up, then started again
(tests/chaos.py has the workload and the invariants)."""

from __future__ import annotations

import time

import pytest

from localcluster import faults
from tests.chaos import Chaos, assert_survived

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

#: how long a killed daemon stays down: long enough that pods are created,
#: annotated and wired meanwhile
DOWN_FOR = 10.0


def kill_for(ch: Chaos, name: str, node: str | None = None) -> None:
    rec = faults.find(ch.c, name, node)
    faults.kill(ch.c, rec)
    time.sleep(DOWN_FOR)
    faults.start(ch.c, rec)


def test_nb_killed_and_restarted(chaos_cluster: Chaos) -> None:
    assert_survived(chaos_cluster.run_fault(
        "NB ovsdb-server -9, down 10 s", lambda: kill_for(chaos_cluster, "ovnnb_db")))


def test_sb_killed_and_restarted(chaos_cluster: Chaos) -> None:
    assert_survived(chaos_cluster.run_fault(
        "SB ovsdb-server -9, down 10 s", lambda: kill_for(chaos_cluster, "ovnsb_db")))


def test_northd_killed_and_restarted(chaos_cluster: Chaos) -> None:
    assert_survived(chaos_cluster.run_fault(
        "ovn-northd -9, down 10 s", lambda: kill_for(chaos_cluster, "ovn-northd")))


def test_no_fault(chaos_cluster: Chaos) -> None:
    # The control: the same scale-up with nothing killed, so each fault's
    # figures can be read against what the load alone costs the stream.
    assert_survived(chaos_cluster.run_fault("none (the load alone)", lambda: None))
