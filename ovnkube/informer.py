"""List-then-watch caches of one Kubernetes kind, as raw JSON dicts.

The informer lists, hands every object to its handlers, then watches from the
listed resourceVersion. When the watch expires (410 Gone) or drops, it lists
again and reports deletions it missed. A periodic resync re-delivers every
cached object so that handlers repair drift.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception_type, wait_exponential

from ovnkube.kubeclient import Obj, ResourceAPI, WatchExpired, key_of

log = logging.getLogger(__name__)

Handler = Callable[[str, Obj | None, Obj | None], None]  # (key, old, new); new None: deleted


class Informer:
    def __init__(self, resource: ResourceAPI, resync_period: float = 300.0) -> None:
        self.resource = resource
        self.resync_period = resync_period
        self.handlers: list[Handler] = []
        self._store: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rv = ""

    # --- cache -------------------------------------------------------------
    def get(self, key: str) -> Obj | None:
        with self._lock:
            return self._store.get(key)

    def items(self) -> list[Obj]:
        with self._lock:
            return list(self._store.values())

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._store)

    def update_local(self, obj: Obj) -> None:
        """Put an object we just wrote into the cache ahead of its watch event,
        unless the cache already holds a newer version."""
        key = key_of(obj)
        new_rv = obj.get("metadata", {}).get("resourceVersion", "")
        with self._lock:
            old = self._store.get(key)
            old_rv = (old or {}).get("metadata", {}).get("resourceVersion", "")
            try:
                newer = not old_rv or int(new_rv) >= int(old_rv)
            except ValueError:
                newer = True
            if newer:
                obj.setdefault("kind", self.resource.kind)
                self._store[key] = obj

    def add_handler(self, h: Handler) -> None:
        self.handlers.append(h)

    # --- running -----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.resource.kind}",
                                        daemon=True)
        self._thread.start()

    @property
    def synced(self) -> threading.Event:
        """Set once the first list has been delivered to the handlers."""
        return self._synced

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def stop(self, join: float = 0) -> None:
        """Stop watching; with `join`, wait up to that many seconds for the
        thread (it ends at the next event, or when the watch times out)."""
        self._stop.set()
        if join and self._thread is not None:
            self._thread.join(join)

    def _deliver(self, key: str, old: Obj | None, new: Obj | None) -> None:
        for h in self.handlers:
            try:
                h(key, old, new)
            except Exception:
                log.exception("%s handler failed for %s", self.resource.kind, key)

    def relist(self) -> None:
        items, rv = self.resource.list()
        fresh = {key_of(o): o for o in items}
        with self._lock:
            old_store = self._store
            self._store = fresh
            self._rv = rv
        for key, obj in fresh.items():
            self._deliver(key, old_store.get(key), obj)
        for key in old_store.keys() - fresh.keys():
            self._deliver(key, old_store[key], None)

    def _run(self) -> None:
        retry = Retrying(wait=wait_exponential(multiplier=0.2, max=10),
                         retry=retry_if_exception_type(Exception), reraise=True)
        need_list = True
        last_resync = time.monotonic()
        while not self._stop.is_set():
            try:
                if need_list:
                    for attempt in retry:
                        with attempt:
                            if self._stop.is_set():
                                return
                            self.relist()
                    need_list = False
                    self._synced.set()
                    last_resync = time.monotonic()
                self._watch_once()
                if time.monotonic() - last_resync > self.resync_period:
                    self.resync()
                    last_resync = time.monotonic()
            except WatchExpired:
                log.info("%s watch expired; listing again", self.resource.kind)
                need_list = True
            except Exception as e:
                if self._stop.is_set():
                    return
                log.warning("%s watch failed (%s); listing again", self.resource.kind, e)
                need_list = True
                time.sleep(0.5)

    def _watch_once(self) -> None:
        timeout = int(min(self.resync_period, 300))
        for etype, obj in self.resource.watch(self._rv, timeout_seconds=max(timeout, 5)):
            if self._stop.is_set():
                return
            rv = obj.get("metadata", {}).get("resourceVersion")
            if etype == "BOOKMARK":
                if rv:
                    self._rv = rv
                continue
            key = key_of(obj)
            with self._lock:
                old = self._store.get(key)
                if etype == "DELETED":
                    self._store.pop(key, None)
                else:
                    self._store[key] = obj
                if rv:
                    self._rv = rv
            self._deliver(key, old, None if etype == "DELETED" else obj)

    def resync(self) -> None:
        for obj in self.items():
            self._deliver(key_of(obj), obj, obj)
