"""A keyed work queue in the manner of client-go's: a key waits at most once
in the queue, is handled by one worker at a time (re-queued if it changes while
being handled), several keys are handled in parallel, and failures are retried
with exponential backoff."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class RetryLater(Exception):
    """Raised by a handler that cannot finish yet (e.g. a node has no subnet):
    the key is retried with backoff without logging a traceback."""


class WorkQueue:
    def __init__(self, name: str, handler: Callable[[str], None], workers: int = 4,
                 base_delay: float = 0.05, max_delay: float = 30.0) -> None:
        self.name = name
        self.handler = handler
        self.workers = workers
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._queued: set[str] = set()
        self._processing: set[str] = set()
        self._dirty: set[str] = set()
        self._delayed: list[tuple[float, str]] = []
        self._failures: dict[str, int] = {}
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def _enqueue_locked(self, key: str) -> None:
        """Queue `key` once; if a worker has it now, mark it to run again after."""
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._cond.notify()

    def add(self, key: str) -> None:
        with self._cond:
            self._enqueue_locked(key)

    def add_after(self, key: str, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, key))
            self._cond.notify()

    def _next(self) -> str | None:
        with self._cond:
            while True:
                if self._stopped:
                    return None
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    self._enqueue_locked(heapq.heappop(self._delayed)[1])
                if self._queue:
                    key = self._queue.pop(0)
                    self._queued.discard(key)
                    self._processing.add(key)
                    return key
                wait = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(wait)

    def _done(self, key: str) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._enqueue_locked(key)

    def retry(self, key: str, error: BaseException) -> None:
        """Handle `key` again later, backing off per consecutive failure (also
        for work that finished after its handler returned, e.g. a NB commit)."""
        with self._cond:
            n = self._failures.get(key, 0) + 1
            self._failures[key] = n
        delay = min(self.base_delay * 2 ** (n - 1), self.max_delay)
        if isinstance(error, RetryLater):
            log.info("%s %s: %s; retry in %.2fs", self.name, key, error, delay)
        else:
            log.error("%s %s failed (attempt %d): %s; retry in %.2fs", self.name, key, n,
                      error, delay, exc_info=error)
        self.add_after(key, delay)

    def _work(self) -> None:
        while (key := self._next()) is not None:
            try:
                self.handler(key)
                with self._cond:
                    self._failures.pop(key, None)
            except Exception as e:
                self.retry(key, e)
            finally:
                self._done(key)

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(10)

    def idle(self) -> bool:
        with self._cond:
            return not (self._queue or self._processing or self._delayed)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)
