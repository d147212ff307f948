"""northd_sync: the one writer of the OVN Northbound DB.

Controllers translate Kubernetes objects into desired rows (`northd_sync.rows`)
and hand them, keyed by owner, to a `NorthdSync` engine, which writes only the
difference:

    nb = NorthdSync("unix:/run/ovn/ovnnb_db.sock").start()
    nb.apply(Owner("node", "n1"), [
        LogicalSwitch("n1", other_config={"subnet": "10.244.1.0/24"}),
        LogicalSwitchPort("k8s-n1", "n1", addresses=["0a:58:0a:f4:01:02 10.244.1.2"]),
    ])
    nb.apply(Owner("pod", "ns/web-0"), [
        LogicalSwitchPort("ns_web-0", "n1", addresses=[a], port_security=[a]),
    ])
    nb.delete(Owner("pod", "ns/web-0"))
    report = nb.sync("pod", {"ns/web-1": [...], ...})     # start-up resync
    nb.stop()

Rules:
- An apply makes the owner's rows exactly the given rows (missing ones
  inserted, different ones updated, unlisted ones deleted); rows are matched
  by (table, key), the key being stored in external_ids `k8s.ovn.org/id`.
- Rows without `k8s.ovn.org/owner-type`/`owner`/`id` are never modified or
  deleted. They may be referenced (a hand-made switch can be a parent).
- A child names its parent (LogicalSwitchPort.switch, ...). The engine adds
  and removes the child in the parent's column with mutate operations, so a
  parent's own apply never drops children of other owners.
- A reference to a row that does not exist (in the DB, or created earlier in
  the same batch) fails that owner's apply with MissingReferenceError naming
  both rows; nothing of that apply is written. Owners are applied in the
  order they are queued: apply the node before its pods. Within one batch a
  failed owner is retried once after the others, so same-instant order does
  not matter. When a parent is deleted, OVN deletes its (strongly referenced)
  children with it; their owners see them missing at their next apply/sync.
- A name already used by a row of someone else (or a hand-made row) is a
  ConflictError; a value the NB schema refuses is an InvalidRowError.

See docs/PERFORMANCE.md ("## northd_sync") for figures.
"""

from northd_sync.engine import (
    ApplyResult,
    NorthdSync,
    OwnerDiff,
    RowChange,
    SyncReport,
)
from northd_sync.errors import (
    AmbiguousReferenceError,
    CommitTimeoutError,
    ConflictError,
    InvalidRowError,
    MissingReferenceError,
    NBConnectionError,
    NorthdSyncError,
    NotStartedError,
    RowError,
    TransactionError,
)
from northd_sync.rows import (
    ACL,
    ID_KEY,
    NAT,
    OWNER_KEY,
    OWNER_TYPE_KEY,
    AddressSet,
    FrozenMap,
    GatewayChassis,
    LoadBalancer,
    LoadBalancerGroup,
    LogicalRouter,
    LogicalRouterPolicy,
    LogicalRouterPort,
    LogicalRouterStaticRoute,
    LogicalSwitch,
    LogicalSwitchPort,
    Meter,
    MeterBand,
    Owner,
    PortGroup,
    Row,
)

__all__ = [
    "ACL", "ID_KEY", "NAT", "OWNER_KEY", "OWNER_TYPE_KEY", "AddressSet",
    "AmbiguousReferenceError", "ApplyResult", "CommitTimeoutError", "ConflictError",
    "FrozenMap", "GatewayChassis", "InvalidRowError", "LoadBalancer", "LoadBalancerGroup",
    "LogicalRouter", "LogicalRouterPolicy", "LogicalRouterPort", "LogicalRouterStaticRoute",
    "LogicalSwitch",
    "LogicalSwitchPort", "Meter", "MeterBand", "MissingReferenceError", "NBConnectionError",
    "NorthdSync", "NorthdSyncError", "NotStartedError", "Owner", "OwnerDiff", "PortGroup",
    "Row", "RowChange", "RowError", "SyncReport", "TransactionError",
]
