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
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, overload
from uuid import UUID

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.reconnect
import ovs.stream
from ovs.db.idl import Transaction
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from northd_sync import fastjson
from northd_sync.cache import IdlView, monitored_columns
from northd_sync.diff import OwnerPlan, Planner, _plain
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
from northd_sync.rows import Owner, Row

log = logging.getLogger(__name__)

DB_NAME = "OVN_Northbound"
DEFAULT_TIMEOUT = 60.0
#: how long one connection attempt may take before we back off and retry
ATTEMPT_WINDOW = 2.0
BARRIER_TIMEOUT = 10.0


# --- results ------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyResult:
    """What one apply/delete changed (all zero: the DB already matched)."""

    owner: Owner
    inserted: int = 0
    updated: int = 0
    deleted: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.deleted)


@dataclass(frozen=True)
class RowChange:
    table: str
    key: str
    #: column (or parent field such as "switch") -> (value in the DB, desired value)
    columns: Mapping[str, tuple[Any, Any]]


@dataclass
class OwnerDiff:
    owner: Owner
    missing: list[tuple[str, str]] = field(default_factory=list)   # (table, key)
    extra: list[tuple[str, str]] = field(default_factory=list)
    changed: list[RowChange] = field(default_factory=list)


@dataclass
class SyncReport:
    """Differences found by `sync` (before repairing them when repair=True)."""

    owner_type: str
    repair: bool
    diffs: dict[str, OwnerDiff] = field(default_factory=dict)
    stale_owners: list[str] = field(default_factory=list)
    errors: dict[str, NorthdSyncError] = field(default_factory=dict)
    rows_checked: int = 0

    @property
    def clean(self) -> bool:
        return not self.diffs and not self.errors

    @property
    def missing(self) -> int:
        return sum(len(d.missing) for d in self.diffs.values())

    @property
    def extra(self) -> int:
        return sum(len(d.extra) for d in self.diffs.values())

    @property
    def changed(self) -> int:
        return sum(len(d.changed) for d in self.diffs.values())

    def __str__(self) -> str:
        verb = "repaired" if self.repair else "found"
        return (f"sync {self.owner_type}: {self.rows_checked} desired rows checked; {verb} "
                f"{self.missing} missing, {self.extra} extra, {self.changed} changed rows in "
                f"{len(self.diffs)} owners ({len(self.stale_owners)} stale owners); "
                f"{len(self.errors)} owners failed")


# --- internals ------------------------------------------------------------------

class _TryAgain(Exception):
    pass


class _NotConnected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Item:
    """One owner's desired rows waiting to be committed."""

    __slots__ = ("deadline", "done", "error", "first_plan", "futures", "memo", "owner",
                 "result", "rows")

    def __init__(self, owner: Owner, rows: tuple[Row, ...], futures: list[Future[Any]],
                 deadline: float) -> None:
        self.owner = owner
        self.rows = rows
        self.futures = futures
        self.deadline = deadline
        self.memo: dict[tuple[str, str], UUID] | None = None
        self.first_plan: OwnerPlan | None = None
        self.error: BaseException | None = None
        self.result: ApplyResult | None = None
        self.done = False


class _SyncItem:
    __slots__ = ("deadline", "desired", "future", "owner_type", "repair")

    def __init__(self, owner_type: str, desired: dict[str, tuple[Row, ...]], repair: bool,
                 future: Future[SyncReport], deadline: float) -> None:
        self.owner_type = owner_type
        self.desired = desired
        self.repair = repair
        self.future = future
        self.deadline = deadline


class _NbIdl(ovs.db.idl.Idl):
    on_change: Any = None
    fast_json = True

    def run(self) -> bool:
        if self.fast_json:
            fastjson.install(self._session)
        return bool(super().run())

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        cb = self.on_change
        if cb is not None:
            cb(event, row, updates)


def _checked(owner: Owner, rows: Iterable[Row]) -> tuple[Row, ...]:
    """The rows of one apply, refused before anything is queued if malformed."""
    if not isinstance(owner, Owner):
        raise TypeError(f"owner must be an Owner, got {owner!r}")
    rs = tuple(rows)
    for r in rs:
        if not isinstance(r, Row) or not r.TABLE:
            raise TypeError(f"{owner}: not a northd_sync row: {r!r}")
    return rs


def split_remotes(remote: str) -> list[str]:
    """Comma-separated remotes, the way python-ovs' Idl splits them."""
    out: list[str] = []
    for r in remote.split(","):
        r = r.strip()
        if out and ":" not in r:
            out[-1] += "," + r
        elif r:
            out.append(r)
    return out


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.transactions = Counter(
            "northd_sync_transactions", "Transactions sent to the NB DB, by outcome",
            ["result"], registry=registry)
        self.rows = Counter(
            "northd_sync_rows_written",
            "Rows inserted, updated or deleted, and parent rows mutated, in committed "
            "transactions", ["table", "op"], registry=registry)
        self.latency = Histogram(
            "northd_sync_commit_latency_seconds",
            "Time from sending a transaction to its outcome", registry=registry,
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.reconnects = Counter(
            "northd_sync_reconnects", "New connections to the NB DB after a lost one",
            registry=registry)
        self.applies = Counter(
            "northd_sync_applies", "Applies and deletes handled, by outcome", ["result"],
            registry=registry)
        self.batch = Histogram(
            "northd_sync_batch_owners", "Owners written per committed transaction",
            registry=registry,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000))
        self.applied = {r: self.applies.labels(r) for r in ("changed", "unchanged", "error")}
        self.connected = Gauge(
            "northd_sync_connected", "1 while connected to the NB DB (the leader if clustered)",
            registry=registry)


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
        self.remotes = split_remotes(remote)
        if not self.remotes:
            raise ValueError("remote is empty: expected e.g. unix:/run/ovn/ovnnb_db.sock")
        for r in self.remotes:
            if not r.startswith(("unix:", "tcp:", "ssl:")):
                raise ValueError(f"bad NB remote {r!r}: expected unix:PATH, tcp:IP:PORT or "
                                 "ssl:IP:PORT (comma-separated for a cluster)")
        ssl_files = {"ssl_key": ssl_key, "ssl_cert": ssl_cert, "ssl_ca": ssl_ca}
        if any(r.startswith("ssl:") for r in self.remotes) or any(ssl_files.values()):
            missing = [k for k, v in ssl_files.items() if not v]
            if missing:
                raise ValueError(f"SSL remote {remote!r} needs {', '.join(missing)}")
            for k, v in ssl_files.items():
                assert v is not None
                if not os.path.exists(v):
                    raise FileNotFoundError(f"{k}: no such file {v!r}")
        self._ssl = ssl_files if all(ssl_files.values()) else None
        self.timeout = timeout
        self.leader_only = leader_only
        self.max_batch_rows = max_batch_rows
        self.probe_interval_ms = probe_interval_ms
        self.persist_uuid = persist_uuid
        self.fast_json = fast_json
        self.registry = registry if registry is not None else CollectorRegistry()
        self._m = _Metrics(self.registry)
        self._counts: dict[str, int] = dict.fromkeys((
            "transactions", "transactions_success", "transactions_try_again",
            "transactions_error", "rows_written", "reconnects", "applies",
            "applies_unchanged", "applies_failed"), 0)
        self._count_lock = threading.Lock()

        self._queue: deque[_Item | _SyncItem] = deque()
        self._qlock = threading.Lock()
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._idl: _NbIdl | None = None
        self._view: IdlView | None = None
        self._conn_seqno: int | None = None
        self._schema_json: dict[str, Any] | None = None
        self._last_reason = "not connected yet"

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> NorthdSync:
        """Connect (raises NBConnectionError naming the remote after `timeout`)
        and start the writer thread."""
        if self._thread is not None:
            raise NorthdSyncError("NorthdSync already started")
        if self._ssl is not None:
            ovs.stream.Stream.ssl_set_private_key_file(self._ssl["ssl_key"])
            ovs.stream.Stream.ssl_set_certificate_file(self._ssl["ssl_cert"])
            ovs.stream.Stream.ssl_set_ca_cert_file(self._ssl["ssl_ca"])
        self._stopping.clear()
        self._connect(time.monotonic() + self.timeout)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="northd-sync", daemon=True)
        self._thread.start()
        log.info("northd_sync connected to %s", self._session_name())
        return self

    def stop(self) -> None:
        """Stop the writer thread; queued changes fail with NotStartedError."""
        self._stopping.set()
        t = self._thread
        if t is not None:
            self._wake()
            t.join(30)
            if t.is_alive():
                log.error("northd_sync writer thread did not stop within 30s")
        self._thread = None
        self._fail_queued(NotStartedError("northd_sync stopped before this change was committed"))
        self._close_idl()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> NorthdSync:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connected(self) -> bool:
        return self._healthy()

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
        self._submit(_Item(owner, _checked(owner, rows), [fut],
                           time.monotonic() + self.timeout))
        return fut.result() if wait else fut

    def apply_many(self, changes: Mapping[Owner, Iterable[Row]]
                   ) -> list[Future[ApplyResult]]:
        """Apply several owners at once (an empty row list deletes the owner):
        queued together, so they share one transaction unless the batch would
        exceed max_batch_rows. Returns one Future per owner, in order."""
        deadline = time.monotonic() + self.timeout
        items = [_Item(owner, _checked(owner, rows), [Future()], deadline)
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
        self._submit(_SyncItem(owner_type, desired, repair, fut,
                               time.monotonic() + self.timeout))
        return fut.result()

    def counters(self) -> dict[str, int]:
        """Plain totals: transactions (sent), transactions_success/_try_again/
        _error, rows_written, reconnects, applies, applies_unchanged, applies_failed."""
        with self._count_lock:
            return dict(self._counts)

    def metrics_text(self) -> str:
        """The Prometheus exposition of this engine's registry."""
        return generate_latest(self.registry).decode()

    # --- submission --------------------------------------------------------------

    def _submit(self, *items: _Item | _SyncItem) -> None:
        if self._thread is None or self._stopping.is_set():
            raise NotStartedError("northd_sync is not running (call start())")
        with self._qlock:
            was_empty = not self._queue
            self._queue.extend(items)
        if was_empty:
            # The writer drains the whole queue each time it looks: one wake-up
            # per burst (each os.write would also hand the GIL to the writer).
            self._wake()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def _take(self) -> list[_Item] | _SyncItem | None:
        with self._qlock:
            if not self._queue:
                return None
            head = self._queue[0]
            if isinstance(head, _SyncItem):
                self._queue.popleft()
                return head
            batch: dict[Owner, _Item] = {}
            nrows = 0
            while self._queue:
                it = self._queue[0]
                if not isinstance(it, _Item):
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

    # --- the writer thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self._healthy():
                    self._lost("connection lost")
                    try:
                        self._connect(None)
                    except NBConnectionError:
                        continue
                    self._count_reconnect()
                    continue
                assert self._idl is not None
                self._idl.run()
                if not self._healthy():
                    continue
                work = self._take()
                if work is None:
                    self._block()
                    continue
                try:
                    if isinstance(work, _SyncItem):
                        self._do_sync(work)
                    else:
                        self._commit(work)
                except Exception as e:
                    # A bug must cost this batch, not the engine: fail the
                    # batch and start again from a fresh connection and cache.
                    log.exception("northd_sync: unexpected error; failing %s",
                                  "a sync" if isinstance(work, _SyncItem) else
                                  f"{len(work)} change(s)")
                    err = NorthdSyncError(f"internal error in northd_sync: {e!r}")
                    if isinstance(work, _SyncItem):
                        if not work.future.done():
                            work.future.set_exception(err)
                    else:
                        for i in work:
                            if not i.done:
                                self._fail(i, err)
                    self._lost("recovering from an internal error")
        except BaseException:
            log.exception("northd_sync writer thread failed")
        finally:
            self._fail_queued(NotStartedError("northd_sync writer thread stopped"))

    def _block(self) -> None:
        assert self._idl is not None
        poller = ovs.poller.Poller()
        self._idl.wait(poller)
        poller.fd_wait(self._wake_r, ovs.poller.POLLIN)
        poller.timer_wait(1000)
        poller.block()
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _sleep(self, seconds: float) -> None:
        self._stopping.wait(seconds)

    def _fail_queued(self, exc: NorthdSyncError) -> None:
        with self._qlock:
            items = list(self._queue)
            self._queue.clear()
        for it in items:
            if isinstance(it, _SyncItem):
                if not it.future.done():
                    it.future.set_exception(exc)
            else:
                self._fail(it, exc)

    def _expire_queued(self) -> None:
        now = time.monotonic()
        with self._qlock:
            expired = [it for it in self._queue if it.deadline <= now]
            for it in expired:
                self._queue.remove(it)
        for it in expired:
            exc = CommitTimeoutError(self.remote, "queued change", self.timeout, self._last_reason)
            if isinstance(it, _SyncItem):
                it.future.set_exception(exc)
            else:
                self._fail(it, exc)

    # --- connection --------------------------------------------------------------

    def _session_name(self) -> str:
        return self._idl.session_name() if self._idl is not None else self.remote

    def _healthy(self) -> bool:
        idl = self._idl
        if idl is None:
            return False
        s = idl._session
        # rpc.get_status(): an error seen by the last recv/send, which the
        # session only turns into a disconnect at its next run()
        return bool(idl.state == idl.IDL_S_MONITORING and s.is_connected()
                    and s.get_seqno() == self._conn_seqno and not s.rpc.get_status())

    def _health(self) -> str:
        idl = self._idl
        if idl is None:
            return "no connection"
        s = idl._session
        status = s.rpc.get_status() if s.rpc is not None else None
        return (f"idl state {idl.state}, connected {s.is_connected()}, rpc status {status}, "
                f"session seqno {s.get_seqno()} (connected at {self._conn_seqno})")

    def _lost(self, why: str) -> None:
        if self._idl is not None:
            log.warning("northd_sync: %s to %s (%s); reconnecting", why, self._session_name(),
                        self._health())
        self._last_reason = why
        self._schema_json = None        # the server may come back with a new schema
        self._close_idl()

    def _close_idl(self) -> None:
        idl, self._idl, self._view = self._idl, None, None
        self._m.connected.set(0)
        if idl is not None:
            idl.on_change = None
            idl.close()

    def _count_reconnect(self) -> None:
        self._m.reconnects.inc()
        self._count("reconnects")
        log.info("northd_sync reconnected to %s", self._session_name())

    def _connect(self, deadline: float | None) -> None:
        """Open a fresh IDL and wait for its first full copy of the monitored
        tables, backing off (tenacity) between attempts. Raises NBConnectionError."""
        self._close_idl()
        started = time.monotonic()

        def stop(rs: RetryCallState) -> bool:
            return self._stopping.is_set() or (deadline is not None
                                               and time.monotonic() >= deadline)

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.info("northd_sync: NB %s not ready (%s); retry %d", self.remote, exc,
                     rs.attempt_number)
            self._expire_queued()

        retrying = Retrying(retry=retry_if_exception_type(_NotConnected),
                            wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
                            stop=stop, sleep=self._sleep, before_sleep=before_sleep,
                            reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self._connect_once(deadline)
        except _NotConnected as e:
            self._last_reason = e.reason
            raise NBConnectionError(self.remote, e.reason, time.monotonic() - started) from None

    def _connect_once(self, deadline: float | None) -> None:
        limit = time.monotonic() + ATTEMPT_WINDOW + 0.5 * len(self.remotes)
        if deadline is not None:
            limit = min(limit, deadline)
        if self._schema_json is None:
            self._schema_json = self._fetch_schema(limit)
        helper = ovs.db.idl.SchemaHelper(None, self._schema_json)
        for table, cols in monitored_columns(self._schema_json["tables"]).items():
            helper.register_columns(table, cols)
        idl = _NbIdl(self.remote, helper, probe_interval=self.probe_interval_ms,
                     leader_only=self.leader_only)
        idl.fast_json = self.fast_json
        view = IdlView(idl.tables)
        idl.on_change = view.on_change
        try:
            while True:
                idl.run()
                s = idl._session
                if idl.state == idl.IDL_S_MONITORING and s.is_connected():
                    break
                if self._gave_up(s) or self._stopping.is_set():
                    raise _NotConnected(self._probe())
                if time.monotonic() >= limit:
                    raise _NotConnected(self._probe())
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.timer_wait(max(1, int((limit - time.monotonic()) * 1000)))
                poller.block()
        except BaseException:
            idl.on_change = None
            idl.close()
            raise
        self._idl, self._view, self._conn_seqno = idl, view, idl._session.get_seqno()
        self._m.connected.set(1)

    @staticmethod
    def _gave_up(session: Any) -> bool:
        """python-ovs tried every remote once and now waits its own backoff:
        end this attempt and let tenacity decide when to try again."""
        r = session.reconnect
        return bool(not session.is_connected() and r.state is ovs.reconnect.Reconnect.Backoff
                    and r.backoff > 0)

    def _fetch_schema(self, limit: float) -> dict[str, Any]:
        session = ovs.jsonrpc.Session.open_multiple(list(self.remotes))
        try:
            req: ovs.jsonrpc.Message | None = None
            sent_seqno = -1
            while True:
                session.run()
                if self.fast_json:
                    fastjson.install(session)
                if session.is_connected():
                    if req is None or session.get_seqno() != sent_seqno:
                        req = ovs.jsonrpc.Message.create_request("get_schema", [DB_NAME])
                        session.send(req)
                        sent_seqno = session.get_seqno()
                    while (msg := session.recv()) is not None:
                        if msg.id != req.id:
                            continue
                        if msg.type == ovs.jsonrpc.Message.T_REPLY:
                            return dict(msg.result)
                        raise _NotConnected(f"get_schema {DB_NAME} failed: {msg.error}")
                elif self._gave_up(session):
                    raise _NotConnected(self._probe())
                if time.monotonic() >= limit:
                    raise _NotConnected(self._probe())
                poller = ovs.poller.Poller()
                session.wait(poller)
                session.recv_wait(poller)
                poller.timer_wait(max(1, int((limit - time.monotonic()) * 1000)))
                poller.block()
        finally:
            session.close()

    def _probe(self) -> str:
        """Why can't we connect? One short connection attempt per remote."""
        reasons = []
        reachable = 0
        for r in self.remotes:
            err, stream = ovs.stream.Stream.open_block(ovs.stream.Stream.open(r), 1000)
            if err:
                reasons.append(f"{r}: {os.strerror(err)}")
            else:
                reachable += 1
                stream.close()
        if reachable == len(self.remotes):
            what = ("no member is the cluster leader yet" if len(self.remotes) > 1
                    else "the server accepts connections but did not serve " + DB_NAME)
            return f"reachable, but {what}"
        if reachable:
            reasons.append(f"{reachable} other member(s) reachable, but none is the cluster "
                           "leader yet")
        return "; ".join(reasons)

    # --- committing ------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._counts[name] += n

    def _succeed(self, item: _Item, plan: OwnerPlan) -> None:
        item.done = True
        if item.futures:
            res = ApplyResult(item.owner, len(plan.inserts), len(plan.updates),
                              len(plan.deletes))
            item.result = res
            for f in item.futures:
                if not f.done():
                    f.set_result(res)
        changed = not plan.empty
        self._m.applied["changed" if changed else "unchanged"].inc()
        with self._count_lock:
            self._counts["applies"] += 1
            if not changed:
                self._counts["applies_unchanged"] += 1

    def _fail(self, item: _Item, exc: BaseException) -> None:
        item.error, item.done = exc, True
        self._m.applied["error"].inc()
        with self._count_lock:
            self._counts["applies"] += 1
            self._counts["applies_failed"] += 1
        for f in item.futures:
            if not f.done():
                f.set_exception(exc)

    def _commit(self, items: list[_Item]) -> None:
        """Commit the items' plans, retrying (tenacity) on TRY_AGAIN and lost
        connections until their deadlines; isolate items the server rejects."""
        last = [self._last_reason]

        def live() -> list[_Item]:
            return [i for i in items if not i.done]

        def stop(rs: RetryCallState) -> bool:
            now = time.monotonic()
            return self._stopping.is_set() or all(i.deadline <= now for i in live())

        retrying = Retrying(retry=retry_if_exception_type(_TryAgain),
                            wait=wait_exponential(multiplier=0.01, max=1.0) + wait_random(0, 0.02),
                            stop=stop, sleep=self._sleep, reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    now = time.monotonic()
                    for i in live():
                        if i.deadline <= now:
                            self._fail(i, CommitTimeoutError(self.remote, str(i.owner),
                                                             self.timeout, last[0]))
                    todo = live()
                    if not todo:
                        return
                    if not self._healthy():
                        self._lost(last[0])
                        try:
                            self._connect(max(i.deadline for i in todo))
                        except NBConnectionError as e:
                            last[0] = e.reason
                            raise _TryAgain(e.reason) from None
                        self._count_reconnect()
                    try:
                        self._attempt(todo)
                    except _TryAgain as e:
                        last[0] = str(e)
                        raise
        except _TryAgain:
            for i in live():
                exc: NorthdSyncError
                if self._stopping.is_set():
                    exc = NotStartedError("northd_sync stopped before the change was committed")
                else:
                    exc = CommitTimeoutError(self.remote, str(i.owner), self.timeout, last[0])
                self._fail(i, exc)

    def _plan(self, items: list[_Item]) -> list[tuple[_Item, OwnerPlan]]:
        assert self._view is not None
        planner = Planner(self._view)
        ok: list[tuple[_Item, OwnerPlan]] = []
        deferred: list[tuple[_Item, RowError]] = []
        for item in items:
            try:
                self._planned(ok, item, planner.plan(item.owner, item.rows, item.memo))
            except (MissingReferenceError, ConflictError) as e:
                deferred.append((item, e))   # may depend on a later item of the batch
            except (RowError, TypeError, ValueError) as e:
                self._fail(item, e)
        while deferred:
            again: list[tuple[_Item, RowError]] = []
            for item, _ in deferred:
                try:
                    self._planned(ok, item, planner.plan(item.owner, item.rows, item.memo))
                except (MissingReferenceError, ConflictError) as e:
                    again.append((item, e))
                except (RowError, TypeError, ValueError) as e:
                    self._fail(item, e)
            if len(again) == len(deferred):
                for item, err in again:
                    self._fail(item, err)
                break
            deferred = again
        dangling = planner.dangling()
        if dangling:
            for item, _ in ok:
                d = dangling.get(item.owner)
                if d is not None:
                    self._fail(item, RowError(
                        f"{item.owner}: {d[0]} {d[1]!r}, which its rows attach to, is deleted "
                        f"by {d[2]} in the same batch", table=d[0], key=d[1]))
            return self._plan([i for i, _ in ok if not i.done])
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

    def _planned(self, ok: list[tuple[_Item, OwnerPlan]], item: _Item, plan: OwnerPlan
                 ) -> None:
        if plan.empty:
            # Nothing to write: done now. (Not kept: a resync of 10,000 owners
            # would otherwise keep 10,000 plans alive, enough to set off a
            # full garbage collection over the whole IDL cache.)
            self._succeed(item, plan)
        else:
            ok.append((item, plan))

    def _attempt(self, items: list[_Item]) -> None:
        assert self._idl is not None
        idl = self._idl
        idl.run()                   # plan on the latest state we can have
        if not self._healthy():
            raise _TryAgain("connection lost")
        todo = self._plan(items)
        if not todo:
            return
        plans = [p for _, p in todo]
        txn = Transaction(idl)
        writer = Writer(idl.tables, txn, self.persist_uuid)
        try:
            writer.write(plans)
        except StaleCache as e:
            txn.abort()
            raise _TryAgain(f"cache changed while writing: {e}") from None
        except BaseException:
            txn.abort()
            raise
        txn.add_comment(f"northd_sync: {len(todo)} owner(s)")
        t0 = time.perf_counter()
        status = self._wait_commit(txn, max(i.deadline for i, _ in todo))
        if status != Transaction.UNCHANGED:
            self._m.latency.observe(time.perf_counter() - t0)
            self._m.transactions.labels(status.replace(" ", "_")).inc()
            self._count("transactions")
        if status == Transaction.UNCHANGED:
            # The plan asked for values the row already has (python-ovs sent
            # nothing): only possible if the cache moved on meanwhile.
            for item, plan in todo:
                self._succeed(item, plan)
            return
        if status == Transaction.SUCCESS:
            self._count("transactions_success")
            self._barrier(plans, txn)
            nrows = 0
            for (table, op), n in writer.stats.items():
                self._m.rows.labels(table, op).inc(n)
                if op != "mutate":
                    nrows += n
            self._count("rows_written", nrows)
            self._m.batch.observe(len(todo))
            for item, plan in todo:
                self._succeed(item, plan)
            return
        if status == Transaction.ERROR:
            self._count("transactions_error")
            err = txn.get_error()
            if "duplicate uuid" in err:
                # An earlier attempt committed although we did not hear back.
                raise _TryAgain("an earlier attempt had committed; re-planning")
            if len(todo) > 1:
                log.warning("NB rejected a transaction of %d owners (%s); splitting it",
                            len(todo), err)
                half = len(todo) // 2
                self._commit([i for i, _ in todo[:half]])
                self._commit([i for i, _ in todo[half:]])
                return
            item, plan = todo[0]
            self._fail(item, TransactionError(item.owner, err, plan.describe_rows()))
            return
        self._count("transactions_try_again")
        raise _TryAgain(f"transaction status {status!r}")

    def _wait_commit(self, txn: Transaction, deadline: float) -> str:
        assert self._idl is not None
        idl = self._idl
        while True:
            status: str = txn.commit()
            if status != Transaction.INCOMPLETE:
                return status
            idl.run()
            if not self._healthy():
                self._last_reason = "connection lost during a commit"
                return Transaction.TRY_AGAIN
            if self._stopping.is_set():
                return Transaction.TRY_AGAIN
            if time.monotonic() >= deadline:
                self._lost("no reply to a transaction")
                return Transaction.TRY_AGAIN
            poller = ovs.poller.Poller()
            idl.wait(poller)
            txn.wait(poller)
            poller.timer_wait(500)
            poller.block()

    def _barrier(self, plans: Sequence[OwnerPlan], txn: Transaction) -> None:
        """Wait until the IDL shows what we committed, so the next plan never
        works on a cache that predates our own write."""
        assert self._idl is not None
        idl = self._idl
        limit = time.monotonic() + BARRIER_TIMEOUT
        while not visible(idl.tables, plans, txn, self.persist_uuid):
            if not self._healthy() or self._stopping.is_set():
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

    # --- sync --------------------------------------------------------------------

    def _do_sync(self, s: _SyncItem) -> None:
        try:
            report = self._sync(s)
        except NorthdSyncError as e:
            s.future.set_exception(e)
            return
        s.future.set_result(report)

    def _sync(self, s: _SyncItem) -> SyncReport:
        if not self._healthy():
            self._lost(self._last_reason)
            self._connect(s.deadline)
            self._count_reconnect()
        assert self._view is not None
        present = self._view.owners(s.owner_type)
        names = sorted(set(s.desired) | present)
        items = [_Item(Owner(s.owner_type, n), s.desired.get(n, ()), [], s.deadline)
                 for n in names]
        if s.repair:
            self._commit(items)
        else:
            self._plan(items)
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
                                   {c: (_plain(o), _plain(n)) for c, (o, n) in u.changes.items()})
                         for u in p.updates])
        if report.diffs or report.errors:
            log.info("%s", report)
        return report
