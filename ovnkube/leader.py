"""Leader election on a coordination.k8s.io/v1 Lease, as client-go does it:
the holder renews the lease every `retry_period`; a candidate takes it over
once `renewTime + leaseDuration` has passed. Updates carry the Lease's
resourceVersion, so two candidates cannot both win the same round."""

from __future__ import annotations

import datetime
import logging
import socket
import threading
import uuid
from collections.abc import Callable

from kubernetes import client

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str,
                 identity: str | None = None, lease_duration: float = 15.0,
                 renew_deadline: float = 10.0, retry_period: float = 2.0) -> None:
        self.coord = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._stop = threading.Event()
        self.is_leader = threading.Event()

    def _body(self, acquire: datetime.datetime, transitions: int,
              rv: str | None = None) -> client.V1Lease:
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                         resource_version=rv),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.lease_duration),
                acquire_time=acquire, renew_time=_now(),
                lease_transitions=transitions))

    def try_acquire_or_renew(self) -> bool:
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
        except client.ApiException as e:
            if e.status != 404:
                raise
            try:
                self.coord.create_namespaced_lease(self.namespace, self._body(_now(), 0))
                return True
            except client.ApiException as e2:
                if e2.status == 409:
                    return False
                raise
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        renew = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.lease_duration
        expired = renew is None or (_now() - renew).total_seconds() > duration
        if holder and holder != self.identity and not expired:
            return False
        mine = holder == self.identity
        body = self._body(spec.acquire_time if mine and spec.acquire_time else _now(),
                          (spec.lease_transitions or 0) + (0 if mine else 1),
                          lease.metadata.resource_version if lease.metadata else None)
        try:
            self.coord.replace_namespaced_lease(self.name, self.namespace, body)
        except client.ApiException as e:
            if e.status == 409:  # someone else updated it first
                return False
            raise
        return True

    def run(self, on_started_leading: Callable[[], None],
            on_stopped_leading: Callable[[], None]) -> None:
        """Block until leader, call on_started_leading in a thread, keep renewing;
        call on_stopped_leading if the lease is lost (then return)."""
        while not self._stop.is_set():
            if self._attempt():
                break
            self._stop.wait(self.retry_period)
        if self._stop.is_set():
            return
        log.info("%s became leader of %s/%s", self.identity, self.namespace, self.name)
        self.is_leader.set()
        threading.Thread(target=on_started_leading, name="leader", daemon=True).start()
        last_renew = _now()
        while not self._stop.wait(self.retry_period):
            if self._attempt():
                last_renew = _now()
            elif (_now() - last_renew).total_seconds() > self.renew_deadline:
                break
        self.is_leader.clear()
        if self._stop.is_set():
            return  # released on purpose
        log.warning("%s lost leadership of %s/%s", self.identity, self.namespace, self.name)
        on_stopped_leading()

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as e:
            log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            return False

    def release(self) -> None:
        """Give the lease up at a clean shutdown so a standby takes over at once."""
        self._stop.set()
        if not self.is_leader.is_set():
            return
        try:
            lease = self.coord.read_namespaced_lease(self.name, self.namespace)
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.coord.replace_namespaced_lease(self.name, self.namespace, lease)
        except Exception as e:
            log.warning("could not release lease: %s", e)
