"""northd_sync: the one writer of the OVN Northbound DB.

Controllers translate Kubernetes objects into desired rows (`northd_sync.rows`)
and hand them, keyed by owner, to a `NorthdSync` engine, which writes only the
difference. See docs/PERFORMANCE.md ("## northd_sync") for figures.
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
    "LogicalRouter", "LogicalRouterPort", "LogicalRouterStaticRoute", "LogicalSwitch",
    "LogicalSwitchPort", "Meter", "MeterBand", "MissingReferenceError", "NBConnectionError",
    "NorthdSync", "NorthdSyncError", "NotStartedError", "Owner", "OwnerDiff", "PortGroup",
    "Row", "RowChange", "RowError", "SyncReport", "TransactionError",
]
