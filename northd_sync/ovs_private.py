"""The python-ovs internals northd_sync relies on, in one place.

python-ovs (the `ovs` package, 3.1) has no public API for these; each is used
for a reason given below. An OVS upgrade that renames one breaks this module
only; every apply in tests/test_northd_sync.py goes through each of them.
"""

from __future__ import annotations

from typing import Any

import ovs.db.data
import ovs.db.idl
import ovs.jsonrpc

#: The converter Row.__setattr__ gives Datum.from_python for references
#: (a Row -> its UUID). We encode values ourselves (to raise, not log, on a
#: bad one), so we need the same converter.
row_to_uuid = ovs.db.idl._row_to_uuid


def row_data(row: Any) -> dict[str, ovs.db.data.Datum]:
    """A row's columns as the Datums the IDL received. Reading them instead of
    the Row's attributes skips a conversion to Python values per access (the
    cache indexes every row of every update), and shows which columns are at
    their default: python-ovs leaves those out."""
    data: dict[str, ovs.db.data.Datum] = row._data
    return data


def row_table_name(row: Any) -> str:
    """The table an IDL row belongs to (Row keeps it only in `_table`)."""
    return str(row._table.name)


def write_datum(txn: ovs.db.idl.Transaction, row: Any, column: Any,
                datum: ovs.db.data.Datum) -> None:
    """Set a column to an already encoded and validated Datum: what
    Row.__setattr__ ends in, without converting the value again (which would
    only log, not raise, on a bad value)."""
    txn._write(row, column, datum)


def session_of(idl: ovs.db.idl.Idl) -> ovs.jsonrpc.Session:
    """The IDL's JSON-RPC session. The Idl exposes no accessor, and the engine
    needs the session's state (connected, seqno, the last rpc error) to tell a
    live connection from one the IDL will only notice at its next run, and to
    switch it to the fast JSON decoder."""
    session: ovs.jsonrpc.Session = idl._session
    return session
