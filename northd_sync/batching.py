"""What callers queue for the writer thread, and how it takes a batch.

Applies queued at the same moment are taken together (one transaction),
coalesced per owner (the later desired state supersedes the earlier one, and
both callers get its result), up to `max_batch_rows`. A sync is taken alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any
from uuid import UUID

import ovs.db.idl
import ovs.poller

from northd_sync.diff import OwnerPlan
from northd_sync.results import ApplyResult, SyncReport
from northd_sync.rows import Owner, Row


class Item:
    """One owner's desired rows waiting to be committed."""

    __slots__ = ("deadline", "done", "error", "first_plan", "futures", "memo", "owner",
                 "result", "rows")

    def __init__(self, owner: Owner, rows: tuple[Row, ...], futures: list[Future[Any]],
                 deadline: float) -> None:
        self.owner = owner
        self.rows = rows
        self.futures = futures
        self.deadline = deadline
        #: UUIDs chosen for this change's new rows, kept across retries
        self.memo: dict[tuple[str, str], UUID] | None = None
        self.first_plan: OwnerPlan | None = None
        self.error: BaseException | None = None
        self.result: ApplyResult | None = None
        self.done = False


class SyncItem:
    __slots__ = ("deadline", "desired", "future", "owner_type", "repair")

    def __init__(self, owner_type: str, desired: dict[str, tuple[Row, ...]], repair: bool,
                 future: Future[SyncReport], deadline: float) -> None:
        self.owner_type = owner_type
        self.desired = desired
        self.repair = repair
        self.future = future
        self.deadline = deadline


def checked(owner: Owner, rows: Iterable[Row]) -> tuple[Row, ...]:
    """The rows of one apply, refused before anything is queued if malformed."""
    if not isinstance(owner, Owner):
        raise TypeError(f"owner must be an Owner, got {owner!r}")
    rs = tuple(rows)
    for r in rs:
        if not isinstance(r, Row) or not r.TABLE:
            raise TypeError(f"{owner}: not a northd_sync row: {r!r}")
    return rs


class Batcher:
    """The queue between callers and the writer thread, and the pipe that
    wakes the writer. `fail` ends an Item with an error (the engine counts it)."""

    def __init__(self, max_batch_rows: int, fail: Callable[[Item, BaseException], None]
                 ) -> None:
        self.max_batch_rows = max_batch_rows
        self._fail = fail
        self._queue: deque[Item | SyncItem] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1

    def open(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def put(self, *items: Item | SyncItem) -> None:
        with self._lock:
            was_empty = not self._queue
            self._queue.extend(items)
        if was_empty:
            # The writer drains the whole queue each time it looks: one wake-up
            # per burst (each os.write would also hand the GIL to the writer).
            self.wake()

    def wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def take(self) -> list[Item] | SyncItem | None:
        """The next work: a sync, or the applies at the head of the queue."""
        with self._lock:
            if not self._queue:
                return None
            head = self._queue[0]
            if isinstance(head, SyncItem):
                self._queue.popleft()
                return head
            batch: dict[Owner, Item] = {}
            nrows = 0
            while self._queue:
                it = self._queue[0]
                if not isinstance(it, Item):
                    break
                size = max(1, len(it.rows))
                if batch and nrows + size > self.max_batch_rows and it.owner not in batch:
                    break
                self._queue.popleft()
                prev = batch.pop(it.owner, None)
                if prev is not None:
                    # The later desired state supersedes the earlier one.
                    it.futures = prev.futures + it.futures
                    it.memo = prev.memo
                    it.deadline = max(it.deadline, prev.deadline)
                    nrows -= max(1, len(prev.rows))
                batch[it.owner] = it
                nrows += size
            return list(batch.values())

    def block(self, idl: ovs.db.idl.Idl) -> None:
        """Wait for an NB update, a wake-up or a second, whichever comes first."""
        poller = ovs.poller.Poller()
        idl.wait(poller)
        poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
        poller.timer_wait(1000)
        poller.block()
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def fail_all(self, exc: BaseException) -> None:
        with self._lock:
            items = list(self._queue)
            self._queue.clear()
        for it in items:
            self._end(it, exc)

    def expire(self, error: Callable[[], BaseException]) -> None:
        """End the queued work whose deadline has passed with `error()`."""
        now = time.monotonic()
        with self._lock:
            expired = [it for it in self._queue if it.deadline <= now]
            for it in expired:
                self._queue.remove(it)
        for it in expired:
            self._end(it, error())

    def _end(self, it: Item | SyncItem, exc: BaseException) -> None:
        if isinstance(it, SyncItem):
            if not it.future.done():
                it.future.set_exception(exc)
        else:
            self._fail(it, exc)
