"""Waiting for a condition in tests: a deadline, not a retry loop."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

#: What a condition may raise while it is not met yet.
NOT_YET = (AssertionError, OSError, KeyError, IndexError, subprocess.CalledProcessError,
           client.ApiException)


def eventually(fn: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
               interval: float = 0.1) -> Any:
    """Poll fn() until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except NOT_YET as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:.0f}s (last: {last!r})")
        time.sleep(interval)
