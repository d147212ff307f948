"""The NetworkPolicy controller: policies, pods and namespaces to port groups,
ACLs and address sets (translation in translate/netpol.py).

Events never rebuild everything: each one works out which owners it affects
(a policy, a namespace's default deny, a shared peer address set) and marks
them dirty; one worker takes every dirty owner at once, translates them from
the caches and hands them to northd_sync together, so one change is one
transaction that touches only what it changes. Owners whose rows are what
was last written are skipped.

A pod joins port groups only once its logical switch port is in the NB (the
pod controller reports that through `port_ready`): a port group naming a
port that does not exist cannot be written. Its address joins address sets
as soon as it has one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from northd_sync import NorthdSync
from northd_sync.errors import MissingReferenceError
from northd_sync.rows import Owner, Row
from ovnkube.informer import Informer
from ovnkube.kubeclient import Obj, get_annotations
from ovnkube.master.translate import netpol
from ovnkube.master.translate.netpol_model import (
    ACL_LOGGING_ANNOTATION,
    AclLogging,
    PeerSelector,
    PodFact,
    Policy,
    PolicyError,
)
from ovnkube.workqueue import RetryLater, WorkQueue

log = logging.getLogger(__name__)

OWNER_TYPES = (netpol.ADDRESS_SET_OWNER, netpol.NAMESPACE_OWNER, netpol.POLICY_OWNER)
_FLUSH = "changes"

EventPoster = Callable[[Obj, str, str], None]  # (object, reason, message)
PodIPs = Callable[[Obj], tuple[str, ...] | None]  # a pod's addresses, None: not on the network


class NetworkPolicyController:
    def __init__(self, engine: NorthdSync, pods: Informer, namespaces: Informer,
                 policies: Informer, pod_ips: PodIPs, post_event: EventPoster,
                 families: Iterable[int] = (4,)) -> None:
        self.engine = engine
        self.pods_inf, self.ns_inf, self.pol_inf = pods, namespaces, policies
        self.pod_ips = pod_ips
        self.post_event = post_event
        self.families = tuple(sorted(set(families)))
        self._lock = threading.RLock()
        self._pods: dict[str, dict[str, PodFact]] = {}  # namespace -> pod key -> fact
        self._ready: set[str] = set()  # pod keys whose LSP is in the NB
        self._ns_labels: dict[str, dict[str, str]] = {}
        self._logging: dict[str, AclLogging] = {}
        self._policies: dict[str, Policy] = {}
        self._by_ns: dict[str, set[str]] = {}  # namespace -> policy keys
        self._peer_refs: dict[PeerSelector, set[str]] = {}  # peer -> policy keys
        self._peers_by_id: dict[str, PeerSelector] = {}
        self._ns_peers: dict[str, set[PeerSelector]] = {}  # peers of one namespace's pods
        self._wide_peers: set[PeerSelector] = set()  # peers with a namespaceSelector
        self._any_named: set[str] = set()  # policies with named ports to any destination
        self._dirty: set[Owner] = set()
        self._applied: dict[Owner, tuple[Row, ...]] = {}
        self.queue = WorkQueue("netpol", self._flush, workers=1)

    # --- facts ---------------------------------------------------------------
    def _fact(self, pod: Obj | None) -> PodFact | None:
        if pod is None:
            return None
        ips = self.pod_ips(pod)
        return PodFact.of(pod, ips) if ips else None

    def _put_pod(self, key: str, fact: PodFact | None) -> PodFact | None:
        ns = key.split("/", 1)[0]
        pods = self._pods.setdefault(ns, {})
        old = pods.pop(key, None)
        if fact is not None:
            pods[key] = fact
        elif not pods:
            del self._pods[ns]
        return old

    def _put_policy(self, key: str, pol: Policy | None) -> Policy | None:
        old = self._policies.pop(key, None)
        self._any_named.discard(key)
        if old is not None:
            self._by_ns.get(old.namespace, set()).discard(key)
            for peer in old.peers():
                refs = self._peer_refs.get(peer, set())
                refs.discard(key)
                if not refs:
                    self._drop_peer(peer)
        if pol is not None:
            self._policies[key] = pol
            self._by_ns.setdefault(pol.namespace, set()).add(key)
            for peer in pol.peers():
                if peer not in self._peer_refs:
                    self._add_peer(peer)
                self._peer_refs[peer].add(key)
            if pol.named_port_egress_anywhere:
                self._any_named.add(key)
        return old

    def _add_peer(self, peer: PeerSelector) -> None:
        self._peer_refs[peer] = set()
        self._peers_by_id[peer.id] = peer
        if peer.namespace is not None:
            self._ns_peers.setdefault(peer.namespace, set()).add(peer)
        else:
            self._wide_peers.add(peer)

    def _drop_peer(self, peer: PeerSelector) -> None:
        self._peer_refs.pop(peer, None)
        self._peers_by_id.pop(peer.id, None)
        self._wide_peers.discard(peer)
        if peer.namespace is not None:
            peers = self._ns_peers.get(peer.namespace, set())
            peers.discard(peer)
            if not peers:
                self._ns_peers.pop(peer.namespace, None)

    def _logging_of(self, ns: Obj) -> AclLogging | None:
        """The namespace's logging, or None (after an Event) when it is malformed."""
        try:
            return AclLogging.parse(get_annotations(ns).get(ACL_LOGGING_ANNOTATION))
        except PolicyError as e:
            self.post_event(ns, "InvalidACLLogging", f"{e}; ACL logging left as it was")
            return None

    # --- marking -----------------------------------------------------------
    def _mark(self, owner_type: str, name: str) -> None:
        self._dirty.add(Owner(owner_type, name))

    def _mark_policy(self, key: str) -> None:
        self._mark(netpol.POLICY_OWNER, key)

    def _mark_pod(self, fact: PodFact) -> None:
        """Everything a pod (before or after a change) takes part in."""
        for pk in self._by_ns.get(fact.namespace, ()):
            if self._policies[pk].pod_selector.matches(fact.labels):
                self._mark_policy(pk)
                self._mark(netpol.NAMESPACE_OWNER, fact.namespace)
        ns_labels = self._ns_labels.get(fact.namespace)
        for peer in self._ns_peers.get(fact.namespace, set()) | self._wide_peers:
            if peer.selects(fact, ns_labels):
                self._mark_peer(peer)
        for pk in self._any_named:
            self._mark_policy(pk)

    def _mark_peer(self, peer: PeerSelector) -> None:
        self._mark(netpol.ADDRESS_SET_OWNER, peer.id)
        for pk in self._peer_refs.get(peer, ()):  # egress named ports resolve on peer pods
            if self._policies[pk].named_port_egress:
                self._mark_policy(pk)

    def _kick(self) -> None:
        if self._dirty:
            self.queue.add(_FLUSH)

    # --- event handlers (informer threads) ---------------------------------
    def on_pod(self, key: str, old: Obj | None, new: Obj | None) -> None:
        fact = self._fact(new)
        with self._lock:
            # Readiness follows the port (port_ready / port_gone), not events:
            # a stale event without the address, seen after port_ready, must
            # not make the pod wait for a port_ready that already came.
            before = self._put_pod(key, fact)
            if before == fact and old is not new:
                return
            for f in (before, fact):
                if f is not None:
                    self._mark_pod(f)
            self._kick()

    def port_ready(self, key: str) -> None:
        """The pod's logical switch port is committed: it may join port groups."""
        self._set_port(key, True)

    def port_gone(self, key: str) -> None:
        """The pod's logical switch port is deleted: a new pod of that name
        joins port groups only once its own port is committed."""
        self._set_port(key, False)

    def _set_port(self, key: str, ready: bool) -> None:
        with self._lock:
            if (key in self._ready) == ready:
                return
            if ready:
                self._ready.add(key)
            else:
                self._ready.discard(key)
            fact = self._pods.get(key.split("/", 1)[0], {}).get(key)
            if fact is not None:
                self._mark_pod(fact)
                self._kick()

    def on_namespace(self, key: str, old: Obj | None, new: Obj | None) -> None:
        labels = dict((new or {}).get("metadata", {}).get("labels") or {})
        logging_ = self._logging_of(new) if new is not None else AclLogging()
        with self._lock:
            before = self._ns_labels.get(key)
            if new is None:
                self._ns_labels.pop(key, None)
                self._logging.pop(key, None)
            else:
                self._ns_labels[key] = labels
            if before != (labels if new is not None else None) or old is new:
                self._mark_namespace_peers(key, before, labels)
            if new is not None and logging_ is not None and \
                    logging_ != self._logging.get(key, AclLogging()):
                self._logging[key] = logging_
                self._mark(netpol.NAMESPACE_OWNER, key)
                for pk in self._by_ns.get(key, ()):
                    self._mark_policy(pk)
            self._kick()

    def _mark_namespace_peers(self, ns: str, before: dict[str, str] | None,
                              after: dict[str, str]) -> None:
        if not self._pods.get(ns):
            return
        for peer in self._wide_peers:
            if peer.selects_namespace(ns, before or {}) or peer.selects_namespace(ns, after):
                self._mark_peer(peer)

    def on_policy(self, key: str, old: Obj | None, new: Obj | None) -> None:
        pol: Policy | None = None
        if new is not None:
            try:
                pol = Policy.parse(new)
            except PolicyError as e:
                self.post_event(new, "InvalidNetworkPolicy", f"{e}; policy not applied")
                return
        with self._lock:
            before = self._policies.get(key)
            if before == pol and old is not new:
                return
            self._put_policy(key, pol)
            marked = {Owner(netpol.POLICY_OWNER, key)}
            for p in (before, pol):
                if p is not None:
                    marked.add(Owner(netpol.NAMESPACE_OWNER, p.namespace))
                    marked.update(Owner(netpol.ADDRESS_SET_OWNER, peer.id) for peer in p.peers())
            if old is new:  # periodic resync: re-check the NB for drift
                for o in marked:
                    self._applied.pop(o, None)
            self._dirty |= marked
            self._kick()

    # --- translation from the caches (under the lock) -------------------------
    def _selected_by(self, peer: PeerSelector) -> list[PodFact]:
        if peer.namespace is not None:
            nss: Iterable[str] = (peer.namespace,)
        else:
            nss = [n for n in self._pods if peer.selects_namespace(n, self._ns_labels.get(n))]
        return [p for n in nss for p in self._pods.get(n, {}).values()
                if peer.pod_selector.matches(p.labels)]

    def _policy_pods(self, pol: Policy) -> list[PodFact]:
        return [p for k, p in self._pods.get(pol.namespace, {}).items()
                if k in self._ready and pol.pod_selector.matches(p.labels)]

    def _desired(self, owner: Owner) -> tuple[Row, ...]:
        if owner.type == netpol.ADDRESS_SET_OWNER:
            peer = self._peers_by_id.get(owner.name)
            if peer is None:
                return ()
            return tuple(netpol.address_set_rows(peer, self._selected_by(peer), self.families))
        if owner.type == netpol.NAMESPACE_OWNER:
            keys = self._by_ns.get(owner.name, set())
            if not keys:
                return ()
            ingress: set[PodFact] = set()
            egress: set[PodFact] = set()
            for pk in keys:
                p = self._policies[pk]
                pods = self._policy_pods(p)
                if p.ingress:
                    ingress.update(pods)
                if p.egress:
                    egress.update(pods)
            return tuple(netpol.namespace_rows(
                owner.name, ingress, egress, self._logging.get(owner.name, AclLogging()),
                self.families))
        pol = self._policies.get(owner.name)
        if pol is None:
            return ()
        dests: dict[int, list[PodFact]] = {}
        for i in pol.named_port_egress:
            rule = pol.egress_rules[i]
            if rule.any_peer:
                dests[i] = [p for pods in self._pods.values() for p in pods.values()]
            else:
                dests[i] = [p for peer in rule.selectors for p in self._selected_by(peer)]
        return tuple(netpol.policy_rows(pol, self._policy_pods(pol), dests,
                                        self._logging.get(pol.namespace, AclLogging()),
                                        self.families))

    def desired_by_type(self) -> dict[str, dict[str, tuple[Row, ...]]]:
        """Every owner's rows, by owner type (the start-up sync)."""
        with self._lock:
            owners = [Owner(netpol.ADDRESS_SET_OWNER, p.id) for p in self._peer_refs]
            owners += [Owner(netpol.NAMESPACE_OWNER, ns) for ns, ks in self._by_ns.items() if ks]
            owners += [Owner(netpol.POLICY_OWNER, k) for k in self._policies]
            out: dict[str, dict[str, tuple[Row, ...]]] = {t: {} for t in OWNER_TYPES}
            for o in owners:
                rows = self._desired(o)
                out[o.type][o.name] = rows
                self._applied[o] = rows
            self._dirty.clear()
            return out

    # --- start-up -------------------------------------------------------------
    def ports_synced(self, pod_keys: Iterable[str]) -> None:
        """The pods whose ports the start-up sync wrote (the informers' first
        lists have filled the caches through the handlers already)."""
        with self._lock:
            self._ready.update(pod_keys)

    # --- the worker -------------------------------------------------------------
    def _flush(self, _key: str) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            changes: dict[Owner, tuple[Row, ...]] = {}
            for owner in sorted(dirty, key=lambda o: (o.type, o.name)):
                rows = self._desired(owner)
                if self._applied.get(owner) != rows:
                    changes[owner] = rows
        if not changes:
            return
        errors: list[BaseException] = []
        for owner, fut in zip(changes, self.engine.apply_many(changes), strict=True):
            try:
                fut.result()
            except Exception as e:  # every owner's outcome is kept
                errors.append(e)
                with self._lock:
                    self._applied.pop(owner, None)
                    self._dirty.add(owner)
                continue
            with self._lock:
                if changes[owner]:
                    self._applied[owner] = changes[owner]
                else:
                    self._applied.pop(owner, None)
        if errors:
            if all(isinstance(e, MissingReferenceError) for e in errors):
                # A pod's port went away (or is not there yet): its events follow.
                raise RetryLater(str(errors[0]))
            raise errors[0]
