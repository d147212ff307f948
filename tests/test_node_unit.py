"""The node agent's per-call bookkeeping stays bounded: the pod cache's
deleted UIDs (no apiserver, no OVS)."""

from __future__ import annotations

from typing import Any

import pytest

from node.kube import PodCache, PodGone


class _Kube:
    api_client: Any = None
    node_name = "n1"


def _pod(name: str, uid: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"namespace": "ns", "name": name, "uid": uid,
                                        "annotations": {}}}


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
