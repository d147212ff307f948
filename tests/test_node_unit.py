"""The node agent's per-call bookkeeping stays bounded: the CNI handler's
per-container locks and the pod cache's deleted UIDs (no apiserver, no OVS)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from node.cniserver import CniHandler
from node.kube import PodCache, PodGone


class _Kube:
    api_client: Any = None
    node_name = "n1"


def _pod(name: str, uid: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": "ns", "name": name, "uid": uid,
                                        "annotations": {}}}


def _handler() -> CniHandler:
    none: Any = None
    return CniHandler(ovs=none, pods=none, kube=None, mtu=1400, netdev=False,
                      annotation_timeout=1, ovn_installed_timeout=1, not_ready=lambda: "")


def test_container_locks_are_dropped_when_no_call_is_in_flight() -> None:
    h = _handler()
    for i in range(1000):
        with h._container_lock(f"c{i}"):
            assert f"c{i}" in h._locks
    assert h._locks == {}
    with pytest.raises(RuntimeError), h._container_lock("boom"):
        raise RuntimeError("a failed call releases its entry too")
    assert h._locks == {}


def test_container_lock_still_serialises_one_container() -> None:
    h = _handler()
    inside: list[int] = []
    overlaps: list[int] = []
    start = threading.Barrier(8)

    def call() -> None:
        start.wait()
        for _ in range(50):
            with h._container_lock("same"):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                time.sleep(0.0005)
                inside.pop()

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and h._locks == {}


def test_deleted_uids_are_kept_for_the_retention_then_forgotten() -> None:
    now = [0.0]
    cache = PodCache(_Kube(), deleted_retention=600, clock=lambda: now[0])  # type: ignore[arg-type]
    for i in range(10_000):  # one pod created and deleted every second
        now[0] = float(i)
        cache._on_event(f"ns/p{i}", None, _pod(f"p{i}", f"u{i}"))
        cache._on_event(f"ns/p{i}", _pod(f"p{i}", f"u{i}"), None)
        assert len(cache.deleted_uids) <= 601
    assert cache.pods == {}
    # A call for a pod deleted within the retention still fails fast...
    with pytest.raises(PodGone, match="was deleted"):
        cache.check_current("ns", "p9500", "u9500")
    # ...and one deleted longer ago is no longer known as such.
    cache.check_current("ns", "p1", "u1")
    assert min(cache.deleted_uids.values()) >= now[0] - 600
