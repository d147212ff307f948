"""The engine's connection to the NB: remotes, SSL, the IDL and its cache,
health, and (re)connecting with backoff to whichever member leads a cluster.

One `Connection` holds at most one live IDL. `connect` opens a fresh one and
waits for its first full copy of the monitored tables; `lost` drops it (and the
schema, which a restarted server may have changed). Callers decide when to
reconnect; this module only knows how.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import ovs.db.idl
import ovs.jsonrpc
import ovs.poller
import ovs.reconnect
import ovs.stream
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from northd_sync import fastjson
from northd_sync.cache import IdlView, monitored_columns
from northd_sync.errors import NBConnectionError
from northd_sync.metrics import Metrics
from northd_sync.ovs_private import session_of

log = logging.getLogger(__name__)

DB_NAME = "OVN_Northbound"
#: how long one connection attempt may take before we back off and retry
ATTEMPT_WINDOW = 2.0


class NotConnected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NbIdl(ovs.db.idl.Idl):
    on_change: Any = None
    fast_json = True

    def run(self) -> bool:
        if self.fast_json:
            fastjson.install(session_of(self))
        return bool(super().run())

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        cb = self.on_change
        if cb is not None:
            cb(event, row, updates)


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


def checked_remotes(remote: str, ssl_files: dict[str, str | None]
                    ) -> tuple[list[str], dict[str, str] | None]:
    """The remotes of `remote`, and the SSL files if any: refused with an
    error naming the bad value before anything connects."""
    remotes = split_remotes(remote)
    if not remotes:
        raise ValueError("remote is empty: expected e.g. unix:/run/ovn/ovnnb_db.sock")
    for r in remotes:
        if not r.startswith(("unix:", "tcp:", "ssl:")):
            raise ValueError(f"bad NB remote {r!r}: expected unix:PATH, tcp:IP:PORT or "
                             "ssl:IP:PORT (comma-separated for a cluster)")
    if not (any(r.startswith("ssl:") for r in remotes) or any(ssl_files.values())):
        return remotes, None
    missing = [k for k, v in ssl_files.items() if not v]
    if missing:
        raise ValueError(f"SSL remote {remote!r} needs {', '.join(missing)}")
    files = {k: v for k, v in ssl_files.items() if v}
    for k, v in files.items():
        if not os.path.exists(v):
            raise FileNotFoundError(f"{k}: no such file {v!r}")
    return remotes, files


def use_ssl_files(files: dict[str, str]) -> None:
    # python-ovs keeps these process-wide.
    ovs.stream.Stream.ssl_set_private_key_file(files["ssl_key"])
    ovs.stream.Stream.ssl_set_certificate_file(files["ssl_cert"])
    ovs.stream.Stream.ssl_set_ca_cert_file(files["ssl_ca"])


class Connection:
    """The IDL (`idl`) and the index over its tables (`view`), both None while
    disconnected. `last_reason` says why the last attempt or connection failed;
    errors raised to callers quote it."""

    def __init__(self, remote: str, remotes: list[str], *, metrics: Metrics,
                 stopping: threading.Event, leader_only: bool = True,
                 probe_interval_ms: int | None = None, fast_json: bool = True,
                 on_retry: Callable[[], None] | None = None) -> None:
        self.remote = remote
        self.remotes = remotes
        self.leader_only = leader_only
        self.probe_interval_ms = probe_interval_ms
        self.fast_json = fast_json
        self.idl: NbIdl | None = None
        self.view: IdlView | None = None
        self.last_reason = "not connected yet"
        self._m = metrics
        self._stopping = stopping
        self._on_retry = on_retry
        self._conn_seqno: int | None = None
        self._schema_json: dict[str, Any] | None = None

    def sleep(self, seconds: float) -> None:
        """Sleep, cut short by stopping (tenacity's sleep for our retries)."""
        self._stopping.wait(seconds)

    def name(self) -> str:
        return self.idl.session_name() if self.idl is not None else self.remote

    def healthy(self) -> bool:
        idl = self.idl
        if idl is None:
            return False
        s = session_of(idl)
        # rpc.get_status(): an error seen by the last recv/send, which the
        # session only turns into a disconnect at its next run()
        return bool(idl.state == idl.IDL_S_MONITORING and s.is_connected()
                    and s.get_seqno() == self._conn_seqno and not s.rpc.get_status())

    def health(self) -> str:
        idl = self.idl
        if idl is None:
            return "no connection"
        s = session_of(idl)
        status = s.rpc.get_status() if s.rpc is not None else None
        return (f"idl state {idl.state}, connected {s.is_connected()}, rpc status {status}, "
                f"session seqno {s.get_seqno()} (connected at {self._conn_seqno})")

    def lost(self, why: str) -> None:
        if self.idl is not None:
            log.warning("northd_sync: %s to %s (%s); reconnecting", why, self.name(),
                        self.health())
        self.last_reason = why
        self._schema_json = None        # the server may come back with a new schema
        self.close()

    def close(self) -> None:
        idl, self.idl, self.view = self.idl, None, None
        self._m.connected.set(0)
        if idl is not None:
            idl.on_change = None
            idl.close()

    def reconnect(self, why: str, deadline: float | None) -> None:
        """Drop the connection (if any) and open a new one; raises
        NBConnectionError."""
        self.lost(why)
        self.connect(deadline)
        self._m.reconnects.inc()
        log.info("northd_sync reconnected to %s", self.name())

    def connect(self, deadline: float | None) -> None:
        """Open a fresh IDL and wait for its first full copy of the monitored
        tables, backing off (tenacity) between attempts. Raises NBConnectionError."""
        self.close()
        started = time.monotonic()

        def stop(rs: RetryCallState) -> bool:
            return self._stopping.is_set() or (deadline is not None
                                               and time.monotonic() >= deadline)

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.info("northd_sync: NB %s not ready (%s); retry %d", self.remote, exc,
                     rs.attempt_number)
            if self._on_retry is not None:
                self._on_retry()

        retrying = Retrying(retry=retry_if_exception_type(NotConnected),
                            wait=wait_exponential(multiplier=0.05, max=2.0) + wait_random(0, 0.05),
                            stop=stop, sleep=self.sleep, before_sleep=before_sleep,
                            reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    self._connect_once(deadline)
        except NotConnected as e:
            self.last_reason = e.reason
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
        idl = NbIdl(self.remote, helper, probe_interval=self.probe_interval_ms,
                    leader_only=self.leader_only)
        idl.fast_json = self.fast_json
        view = IdlView(idl.tables)
        idl.on_change = view.on_change
        try:
            while True:
                idl.run()
                s = session_of(idl)
                if idl.state == idl.IDL_S_MONITORING and s.is_connected():
                    break
                if _gave_up(s) or self._stopping.is_set():
                    raise NotConnected(self._probe())
                if time.monotonic() >= limit:
                    raise NotConnected(self._probe())
                poller = ovs.poller.Poller()
                idl.wait(poller)
                poller.timer_wait(max(1, int((limit - time.monotonic()) * 1000)))
                poller.block()
        except BaseException:
            idl.on_change = None
            idl.close()
            raise
        self.idl, self.view, self._conn_seqno = idl, view, session_of(idl).get_seqno()
        self._m.connected.set(1)

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
                        raise NotConnected(f"get_schema {DB_NAME} failed: {msg.error}")
                elif _gave_up(session):
                    raise NotConnected(self._probe())
                if time.monotonic() >= limit:
                    raise NotConnected(self._probe())
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


def _gave_up(session: Any) -> bool:
    """python-ovs tried every remote once and now waits its own backoff:
    end this attempt and let tenacity decide when to try again."""
    r = session.reconnect
    return bool(not session.is_connected() and r.state is ovs.reconnect.Reconnect.Backoff
                and r.backoff > 0)
