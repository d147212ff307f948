"""An ovsdbapp NB API bound to one connection (for tests that read the NB)."""

from __future__ import annotations

from typing import Any

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl


def nb_api(remote: str, timeout: int = 10) -> Any:
    # ovsdbapp keeps the connection on the class: a fresh subclass per
    # connection lets one test process talk to several NB databases.
    cls = type("TestNbApi", (impl_idl.OvnNbApiIdlImpl,), {"_ovsdb_connection": None})
    idl = connection.OvsdbIdl.from_server(remote, "OVN_Northbound")
    return cls(connection.Connection(idl, timeout=timeout))


def close(api: Any) -> None:
    api.ovsdb_connection.stop()
