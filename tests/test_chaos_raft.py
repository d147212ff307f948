"""Faults of a raft OVN central under load (`ovnkube-local up --db-replicas
3`): the NB leader killed (-9), an NB follower, then the SB leader, each
while a Deployment scales up (tests/chaos.py has the workload and the
invariants)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster import faults
from tests.chaos import Chaos, assert_survived
from tests.conftest import need_kube, need_root
from tests.e2e_helpers import E2E, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1500)]

DOWN_FOR = 10.0


@pytest.fixture(scope="module")
def raft_chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    need_root()
    need_kube()
    from localcluster.cluster import Cluster
    c = Cluster.create(f"raft{secrets.token_hex(2)}", 2, db_replicas=3)
    try:
        ch = Chaos(E2E(c), Path(tmp_path_factory.mktemp("raft")))
        ch.set_up()
        yield ch
    finally:
        c.down()


def member(ch: Chaos, which: str, role: str) -> str:
    roles = wait_for(lambda: (r := faults.raft_roles(ch.c, which))
                     and list(r.values()).count("leader") == 1 and "" not in r.values()
                     and r, 60, f"one {which} raft leader and all members joined")
    return next(name for name, r in sorted(roles.items()) if r == role)


def kill_member(ch: Chaos, which: str, role: str) -> None:
    rec = faults.find(ch.c, member(ch, which, role))
    faults.kill(ch.c, rec)
    # the others elect a leader among themselves meanwhile
    time.sleep(DOWN_FOR)
    faults.start(ch.c, rec)


@pytest.mark.parametrize(("which", "role"), [("nb", "leader"), ("nb", "follower"),
                                             ("sb", "leader")])
def test_raft_member_killed(raft_chaos: Chaos, which: str, role: str) -> None:
    assert_survived(raft_chaos.run_fault(
        f"{which.upper()} raft {role} -9, down {DOWN_FOR:.0f} s (3 members)",
        lambda: kill_member(raft_chaos, which, role)))
    # the member came back and rejoined
    member(raft_chaos, which, "leader")
