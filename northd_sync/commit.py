"""Committing a batch: plan it against the cache, write one transaction, wait
for its outcome and for the cache to show it; retry (tenacity backoff) on
TRY_AGAIN and lost connections until the items' deadlines; split a batch the
server rejects to find the owner at fault.

Rows are inserted with UUIDs chosen here and kept across retries (`Item.memo`),
so a retry of a transaction that did commit is refused ("duplicate uuid")
instead of writing the rows twice; the re-plan then finds them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import ovs.poller
from ovs.db.idl import Transaction
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from northd_sync.batching import Item
from northd_sync.connection import Connection
from northd_sync.diff import OwnerPlan
from northd_sync.errors import (
    CommitTimeoutError,
    ConflictError,
    MissingReferenceError,
    NBConnectionError,
    NorthdSyncError,
    NotStartedError,
    RowError,
    TransactionError,
)
from northd_sync.execute import StaleCache, Writer, visible
from northd_sync.metrics import Metrics
from northd_sync.planner import Planner
from northd_sync.results import ApplyResult

log = logging.getLogger(__name__)

BARRIER_TIMEOUT = 10.0


class TryAgain(Exception):
    pass


class Committer:
    """Commits batches of Items over `conn`, ending each Item (its futures)
    with a result or an error and counting the outcome in `metrics`."""

    def __init__(self, conn: Connection, metrics: Metrics, stopping: threading.Event, *,
                 timeout: float, persist_uuid: bool = True) -> None:
        self.conn = conn
        self.m = metrics
        self.stopping = stopping
        self.timeout = timeout
        self.persist_uuid = persist_uuid

    def succeed(self, item: Item, plan: OwnerPlan) -> None:
        item.done = True
        if item.futures:
            res = ApplyResult(item.owner, len(plan.inserts), len(plan.updates),
                              len(plan.deletes))
            item.result = res
            for f in item.futures:
                if not f.done():
                    f.set_result(res)
        self.m.applied["unchanged" if plan.empty else "changed"].inc()

    def fail(self, item: Item, exc: BaseException) -> None:
        item.error, item.done = exc, True
        self.m.applied["error"].inc()
        for f in item.futures:
            if not f.done():
                f.set_exception(exc)

    def commit(self, items: list[Item]) -> None:
        """Commit the items' plans, retrying (tenacity) on TRY_AGAIN and lost
        connections until their deadlines; isolate items the server rejects."""
        last = [self.conn.last_reason]

        def live() -> list[Item]:
            return [i for i in items if not i.done]

        def stop(rs: RetryCallState) -> bool:
            now = time.monotonic()
            return self.stopping.is_set() or all(i.deadline <= now for i in live())

        retrying = Retrying(retry=retry_if_exception_type(TryAgain),
                            wait=wait_exponential(multiplier=0.01, max=1.0) + wait_random(0, 0.02),
                            stop=stop, sleep=self.conn.sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    now = time.monotonic()
                    for i in live():
                        if i.deadline <= now:
                            self.fail(i, CommitTimeoutError(self.conn.remote, str(i.owner),
                                                             self.timeout, last[0]))
                    todo = live()
                    if not todo:
                        return
                    if not self.conn.healthy():
                        try:
                            self.conn.reconnect(last[0], max(i.deadline for i in todo))
                        except NBConnectionError as e:
                            last[0] = e.reason
                            raise TryAgain(e.reason) from None
                    try:
                        self._attempt(todo)
                    except TryAgain as e:
                        last[0] = str(e)
                        raise
        except TryAgain:
            for i in live():
                exc: NorthdSyncError
                if self.stopping.is_set():
                    exc = NotStartedError("northd_sync stopped before the change was committed")
                else:
                    exc = CommitTimeoutError(self.conn.remote, str(i.owner), self.timeout, last[0])
                self.fail(i, exc)

    def plan(self, items: list[Item]) -> list[tuple[Item, OwnerPlan]]:
        assert self.conn.view is not None
        planner = Planner(self.conn.view)
        ok: list[tuple[Item, OwnerPlan]] = []
        deferred: list[tuple[Item, RowError]] = []
        for item in items:
            try:
                self._planned(ok, item, planner.plan(item.owner, item.rows, item.memo))
            except (MissingReferenceError, ConflictError) as e:
                deferred.append((item, e))   # may depend on a later item of the batch
            except (RowError, TypeError, ValueError) as e:
                self.fail(item, e)
        while deferred:
            again: list[tuple[Item, RowError]] = []
            for item, _ in deferred:
                try:
                    self._planned(ok, item, planner.plan(item.owner, item.rows, item.memo))
                except (MissingReferenceError, ConflictError) as e:
                    again.append((item, e))
                except (RowError, TypeError, ValueError) as e:
                    self.fail(item, e)
            if len(again) == len(deferred):
                for item, err in again:
                    self.fail(item, err)
                break
            deferred = again
        dangling = planner.dangling()
        if dangling:
            for item, _ in ok:
                d = dangling.get(item.owner)
                if d is not None:
                    self.fail(item, RowError(
                        f"{item.owner}: {d[0]} {d[1]!r}, which its rows attach to, is deleted "
                        f"by {d[2]} in the same batch", table=d[0], key=d[1]))
            return self.plan([i for i, _ in ok if not i.done])
        for item, plan in ok:
            if item.first_plan is None:
                item.first_plan = plan
            if plan.inserts:
                # keep the UUIDs of new rows for retries of this change
                memo = item.memo if item.memo is not None else {}
                for ins in plan.inserts:
                    memo[(ins.row.TABLE, ins.row.key)] = ins.ref.uuid
                item.memo = memo
        return ok

    def _planned(self, ok: list[tuple[Item, OwnerPlan]], item: Item, plan: OwnerPlan
                 ) -> None:
        if plan.empty:
            # Nothing to write: done now. (Not kept: a resync of 10,000 owners
            # would otherwise keep 10,000 plans alive, enough to set off a
            # full garbage collection over the whole IDL cache.)
            self.succeed(item, plan)
        else:
            ok.append((item, plan))

    def _attempt(self, items: list[Item]) -> None:
        assert self.conn.idl is not None
        idl = self.conn.idl
        idl.run()                   # plan on the latest state we can have
        if not self.conn.healthy():
            raise TryAgain("connection lost")
        todo = self.plan(items)
        if not todo:
            return
        plans = [p for _, p in todo]
        txn = Transaction(idl)
        writer = Writer(idl.tables, txn, self.persist_uuid)
        try:
            writer.write(plans)
        except StaleCache as e:
            txn.abort()
            raise TryAgain(f"cache changed while writing: {e}") from None
        except BaseException:
            txn.abort()
            raise
        txn.add_comment(f"northd_sync: {len(todo)} owner(s)")
        t0 = time.perf_counter()
        status = self._wait_commit(txn, max(i.deadline for i, _ in todo))
        if status != Transaction.UNCHANGED:
            self.m.latency.observe(time.perf_counter() - t0)
            self.m.transactions.labels(status.replace(" ", "_")).inc()
        if status == Transaction.UNCHANGED:
            # The plan asked for values the row already has (python-ovs sent
            # nothing): only possible if the cache moved on meanwhile.
            for item, plan in todo:
                self.succeed(item, plan)
            return
        if status == Transaction.SUCCESS:
            self._barrier(plans, txn)
            for (table, op), n in writer.stats.items():
                self.m.rows.labels(table, op).inc(n)
            self.m.batch.observe(len(todo))
            for item, plan in todo:
                self.succeed(item, plan)
            return
        if status == Transaction.ERROR:
            err = txn.get_error()
            if "duplicate uuid" in err:
                # An earlier attempt committed although we did not hear back.
                raise TryAgain("an earlier attempt had committed; re-planning")
            if len(todo) > 1:
                log.warning("NB rejected a transaction of %d owners (%s); splitting it",
                            len(todo), err)
                half = len(todo) // 2
                self.commit([i for i, _ in todo[:half]])
                self.commit([i for i, _ in todo[half:]])
                return
            item, plan = todo[0]
            self.fail(item, TransactionError(item.owner, err, plan.describe_rows()))
            return
        raise TryAgain(f"transaction status {status!r}")

    def _wait_commit(self, txn: Transaction, deadline: float) -> str:
        assert self.conn.idl is not None
        idl = self.conn.idl
        while True:
            status: str = txn.commit()
            if status != Transaction.INCOMPLETE:
                return status
            idl.run()
            if not self.conn.healthy():
                self.conn.last_reason = "connection lost during a commit"
                return Transaction.TRY_AGAIN
            if self.stopping.is_set():
                return Transaction.TRY_AGAIN
            if time.monotonic() >= deadline:
                self.conn.lost("no reply to a transaction")
                return Transaction.TRY_AGAIN
            poller = ovs.poller.Poller()
            idl.wait(poller)
            txn.wait(poller)
            poller.timer_wait(500)
            poller.block()

    def _barrier(self, plans: Sequence[OwnerPlan], txn: Transaction) -> None:
        """Wait until the IDL shows what we committed, so the next plan never
        works on a cache that predates our own write."""
        assert self.conn.idl is not None
        idl = self.conn.idl
        limit = time.monotonic() + BARRIER_TIMEOUT
        while not visible(idl.tables, plans, txn, self.persist_uuid):
            if not self.conn.healthy() or self.stopping.is_set():
                return              # a reconnect re-reads everything
            if time.monotonic() >= limit:
                log.warning("northd_sync: committed changes not visible after %.0fs",
                            BARRIER_TIMEOUT)
                return
            poller = ovs.poller.Poller()
            idl.wait(poller)
            poller.timer_wait(100)
            poller.block()
            idl.run()
