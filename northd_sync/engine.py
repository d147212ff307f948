"""NorthdSync: the one writer of the OVN Northbound DB.

One background thread owns a python-ovs IDL (a replica of the NB tables we
use, and only those columns). Callers hand it desired rows per owner with
`apply`; the thread plans the difference against the IDL cache and commits
the plans of everything queued at that moment in one transaction. A no-op
apply sends nothing.

Faults:
- TRY_AGAIN (a `verify` failed, the connection dropped mid-commit, the
  cluster leader changed) -> re-plan against the refreshed cache and retry,
  with tenacity backoff, until the caller's deadline. Rows are inserted with
  UUIDs chosen by us and kept across retries, so a retry of a transaction that
  did commit is refused by the server ("duplicate uuid") instead of writing
  the rows twice; the re-plan then finds them.
- A lost connection -> a fresh IDL (tenacity exponential backoff between
  attempts), a full re-read of the monitored tables, then whatever was in
  flight is re-planned from that state.
- ovsdb-server rejecting a transaction of several owners -> split it to find
  the owner at fault; the others commit, that owner gets a TransactionError.

This module holds the public API and the writer loop; the parts it drives:
`connection` (remotes, IDL, health, reconnecting), `batching` (the queue and
how a batch is taken), `commit` (plan, write, wait, retry, split), `metrics`
(the only counters) and `ovs_private` (the python-ovs internals we rely on).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Literal, overload

from prometheus_client import CollectorRegistry

from northd_sync.batching import Batcher, Item, SyncItem, checked
from northd_sync.commit import Committer
from northd_sync.connection import Connection, checked_remotes, use_ssl_files
from northd_sync.diff import plain
from northd_sync.errors import (
    CommitTimeoutError,
    NBConnectionError,
    NorthdSyncError,
    NotStartedError,
)
from northd_sync.metrics import Metrics
from northd_sync.results import ApplyResult, OwnerDiff, RowChange, SyncReport
from northd_sync.rows import Owner, Row

__all__ = ["ApplyResult", "NorthdSync", "OwnerDiff", "RowChange", "SyncReport"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class NorthdSync:
    """The one writer of the OVN Northbound DB.

    >>> nb = NorthdSync("unix:/run/ovn/ovnnb_db.sock").start()
    >>> nb.apply(Owner("node", "n1"), [LogicalSwitch("n1")])
    >>> nb.apply(Owner("pod", "ns/p"), [LogicalSwitchPort("ns_p", "n1", addresses=["..."])])
    >>> nb.stop()

    `remote`: "unix:PATH", "tcp:IP:PORT", "ssl:IP:PORT", or several of them
    comma-separated (the members of a raft cluster; the engine talks to the
    leader and follows leader changes). SSL remotes need ssl_key, ssl_cert and
    ssl_ca (python-ovs keeps these process-wide).
    `timeout`: how long start() tries to connect, and how long an apply or
    sync may wait for a connection and a commit before it fails.
    `persist_uuid`: insert rows with UUIDs chosen by the engine (needs
    ovsdb-server >= 3.1); this is what makes retries after an ambiguous failure
    exactly-once. `fast_json`: decode replies with the stdlib's C JSON decoder.
    `registry`: the prometheus_client registry for the metrics (default: a
    new one per engine, see `registry` and `metrics_text()`).
    """

    def __init__(self, remote: str, *, ssl_key: str | None = None,
                 ssl_cert: str | None = None, ssl_ca: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, leader_only: bool = True,
                 max_batch_rows: int = 20000, probe_interval_ms: int | None = None,
                 registry: CollectorRegistry | None = None, persist_uuid: bool = True,
                 fast_json: bool = True) -> None:
        self.remote = remote
        self.remotes, self._ssl = checked_remotes(
            remote, {"ssl_key": ssl_key, "ssl_cert": ssl_cert, "ssl_ca": ssl_ca})
        self.timeout = timeout
        self.persist_uuid = persist_uuid
        self.registry = registry if registry is not None else CollectorRegistry()
        self._m = Metrics(self.registry)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn = Connection(remote, self.remotes, metrics=self._m, stopping=self._stopping,
                                leader_only=leader_only, probe_interval_ms=probe_interval_ms,
                                fast_json=fast_json, on_retry=self._expire_queued)
        self._committer = Committer(self._conn, self._m, self._stopping, timeout=timeout,
                                    persist_uuid=persist_uuid)
        self._batcher = Batcher(max_batch_rows, self._committer.fail)

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> NorthdSync:
        """Connect (raises NBConnectionError naming the remote after `timeout`)
        and start the writer thread."""
        if self._thread is not None:
            raise NorthdSyncError("NorthdSync already started")
        if self._ssl is not None:
            use_ssl_files(self._ssl)
        self._stopping.clear()
        self._conn.connect(time.monotonic() + self.timeout)
        self._batcher.open()
        self._thread = threading.Thread(target=self._run, name="northd-sync", daemon=True)
        self._thread.start()
        log.info("northd_sync connected to %s", self._conn.name())
        return self

    def stop(self) -> None:
        """Stop the writer thread; queued changes fail with NotStartedError."""
        self._stopping.set()
        t = self._thread
        if t is not None:
            self._batcher.wake()
            t.join(30)
            if t.is_alive():
                log.error("northd_sync writer thread did not stop within 30s")
        self._thread = None
        self._batcher.fail_all(
            NotStartedError("northd_sync stopped before this change was committed"))
        self._conn.close()
        self._batcher.close()

    def __enter__(self) -> NorthdSync:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._conn.healthy()

    # --- public API --------------------------------------------------------------

    @overload
    def apply(self, owner: Owner, rows: Iterable[Row], wait: Literal[True] = True
              ) -> ApplyResult: ...

    @overload
    def apply(self, owner: Owner, rows: Iterable[Row], wait: Literal[False]
              ) -> Future[ApplyResult]: ...

    @overload
    def apply(self, owner: Owner, rows: Iterable[Row], wait: bool
              ) -> ApplyResult | Future[ApplyResult]: ...

    def apply(self, owner: Owner, rows: Iterable[Row], wait: bool = True
              ) -> ApplyResult | Future[ApplyResult]:
        """Make the owner's rows in the NB DB exactly `rows`: insert the missing,
        update the different, delete the owner's rows not listed. One transaction
        (shared with other applies queued at the same moment); none if nothing
        differs. With wait=False returns a Future."""
        fut: Future[ApplyResult] = Future()
        self._submit(Item(owner, checked(owner, rows), [fut],
                           time.monotonic() + self.timeout))
        return fut.result() if wait else fut

    def apply_many(self, changes: Mapping[Owner, Iterable[Row]]
                   ) -> list[Future[ApplyResult]]:
        """Apply several owners at once (an empty row list deletes the owner):
        queued together, so they share one transaction unless the batch would
        exceed max_batch_rows. Returns one Future per owner, in order."""
        deadline = time.monotonic() + self.timeout
        items = [Item(owner, checked(owner, rows), [Future()], deadline)
                 for owner, rows in changes.items()]
        if items:
            self._submit(*items)
        return [it.futures[0] for it in items]

    @overload
    def delete(self, owner: Owner, wait: Literal[True] = True) -> ApplyResult: ...

    @overload
    def delete(self, owner: Owner, wait: Literal[False]) -> Future[ApplyResult]: ...

    def delete(self, owner: Owner, wait: bool = True) -> ApplyResult | Future[ApplyResult]:
        """Delete every row this owner owns (= apply with no rows)."""
        return self.apply(owner, (), wait)

    def sync(self, owner_type: str, desired_by_owner: Mapping[str, Iterable[Row]],
             repair: bool = True) -> SyncReport:
        """Full resync of one owner type: compare every owner's desired rows with
        the DB, including owners the DB has and `desired_by_owner` lacks (stale:
        all their rows are extra). With repair=True fix everything, in one
        transaction unless the server rejects part of it; with repair=False only
        report. Owners whose rows are invalid are listed in `errors`."""
        desired = {str(k): tuple(v) for k, v in desired_by_owner.items()}
        fut: Future[SyncReport] = Future()
        self._submit(SyncItem(owner_type, desired, repair, fut,
                               time.monotonic() + self.timeout))
        return fut.result()

    def counters(self) -> dict[str, int]:
        """Plain totals: transactions (sent), transactions_success/_try_again/
        _error, rows_written, reconnects, applies, applies_unchanged, applies_failed."""
        return self._m.totals()

    def metrics_text(self) -> str:
        """The Prometheus exposition of this engine's registry."""
        return self._m.text()

    # --- submission --------------------------------------------------------------

    def _submit(self, *items: Item | SyncItem) -> None:
        if self._thread is None or self._stopping.is_set():
            raise NotStartedError("northd_sync is not running (call start())")
        self._batcher.put(*items)

    def _expire_queued(self) -> None:
        self._batcher.expire(lambda: CommitTimeoutError(
            self.remote, "queued change", self.timeout, self._conn.last_reason))

    # --- the writer thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                conn = self._conn
                if not conn.healthy():
                    with contextlib.suppress(NBConnectionError):
                        conn.reconnect("connection lost", None)
                    continue
                assert conn.idl is not None
                conn.idl.run()
                if not conn.healthy():
                    continue
                work = self._batcher.take()
                if work is None:
                    self._batcher.block(conn.idl)
                    continue
                try:
                    if isinstance(work, SyncItem):
                        self._do_sync(work)
                    else:
                        self._committer.commit(work)
                except Exception as e:
                    # A bug must cost this batch, not the engine: fail the
                    # batch and start again from a fresh connection and cache.
                    log.exception("northd_sync: unexpected error; failing %s",
                                  "a sync" if isinstance(work, SyncItem) else
                                  f"{len(work)} change(s)")
                    err = NorthdSyncError(f"internal error in northd_sync: {e!r}")
                    if isinstance(work, SyncItem):
                        if not work.future.done():
                            work.future.set_exception(err)
                    else:
                        for i in work:
                            if not i.done:
                                self._committer.fail(i, err)
                    self._conn.lost("recovering from an internal error")
        except BaseException:
            log.exception("northd_sync writer thread failed")
        finally:
            self._batcher.fail_all(NotStartedError("northd_sync writer thread stopped"))

    # --- sync --------------------------------------------------------------------

    def _do_sync(self, s: SyncItem) -> None:
        try:
            report = self._sync(s)
        except NorthdSyncError as e:
            s.future.set_exception(e)
            return
        s.future.set_result(report)

    def _sync(self, s: SyncItem) -> SyncReport:
        if not self._conn.healthy():
            self._conn.reconnect(self._conn.last_reason, s.deadline)
        assert self._conn.view is not None
        present = self._conn.view.owners(s.owner_type)
        names = sorted(set(s.desired) | present)
        items = [Item(Owner(s.owner_type, n), s.desired.get(n, ()), [], s.deadline)
                 for n in names]
        if s.repair:
            self._committer.commit(items)
        else:
            self._committer.plan(items)
        report = SyncReport(s.owner_type, s.repair,
                            stale_owners=sorted(present - set(s.desired)),
                            rows_checked=sum(len(v) for v in s.desired.values()))
        for item in items:
            name = item.owner.name
            if item.error is not None and isinstance(item.error, NorthdSyncError):
                report.errors[name] = item.error
            elif item.error is not None:
                report.errors[name] = NorthdSyncError(str(item.error))
            p = item.first_plan
            if p is None or p.empty:
                continue
            report.diffs[name] = OwnerDiff(
                item.owner,
                missing=[(i.row.TABLE, i.row.key) for i in p.inserts],
                extra=[(d.table, d.key) for d in p.deletes],
                changed=[RowChange(u.row.TABLE, u.row.key,
                                   {c: (plain(o), plain(n)) for c, (o, n) in u.changes.items()})
                         for u in p.updates])
        if report.diffs or report.errors:
            log.info("%s", report)
        return report
