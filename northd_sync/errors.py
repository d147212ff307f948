"""Errors raised by northd_sync. Every message names what was wrong and where."""

from __future__ import annotations

from typing import Any


class NorthdSyncError(Exception):
    """Base class of every northd_sync error."""


class NotStartedError(NorthdSyncError):
    """The engine is not running (never started, or stopped)."""


class NBConnectionError(NorthdSyncError):
    """The Northbound database could not be reached."""

    def __init__(self, remote: str, reason: str, waited: float) -> None:
        self.remote = remote
        self.reason = reason
        super().__init__(
            f"cannot connect to the OVN Northbound DB at {remote} (waited {waited:.1f}s): "
            f"{reason}")


class CommitTimeoutError(NorthdSyncError):
    """A change could not be committed in time. Its outcome is unknown: the DB
    may or may not hold it; applying the same desired state again is safe."""

    def __init__(self, remote: str, what: str, timeout: float, reason: str) -> None:
        self.remote = remote
        super().__init__(
            f"{what}: not committed to the OVN Northbound DB at {remote} within "
            f"{timeout:.1f}s ({reason}); the outcome is unknown, re-apply to be sure")


class RowError(NorthdSyncError):
    """A desired row cannot be written. Nothing of the owner's apply was written."""

    def __init__(self, message: str, *, table: str, key: str, column: str | None = None
                 ) -> None:
        self.table = table
        self.key = key
        self.column = column
        super().__init__(message)


class MissingReferenceError(RowError):
    """A row names a row (its parent, a group, a port) that does not exist."""

    def __init__(self, owner: Any, table: str, key: str, field: str, ref_table: str,
                 name: str) -> None:
        self.ref_table = ref_table
        self.name = name
        super().__init__(
            f"{owner}: {table} row {key!r} refers by {field!r} to {ref_table} {name!r}, "
            f"which does not exist (apply the row that declares it first)",
            table=table, key=key, column=field)


class AmbiguousReferenceError(RowError):
    def __init__(self, owner: Any, table: str, key: str, field: str, ref_table: str,
                 name: str, count: int) -> None:
        super().__init__(
            f"{owner}: {table} row {key!r} refers by {field!r} to {ref_table} {name!r}, "
            f"but {count} rows have that name",
            table=table, key=key, column=field)


class ConflictError(RowError):
    """The row's name is already used by a row that belongs to someone else."""

    def __init__(self, owner: Any, table: str, key: str, name: str, holder: str) -> None:
        super().__init__(
            f"{owner}: cannot create {table} {name!r} (key {key!r}): a row with that name "
            f"already exists and {holder}",
            table=table, key=key, column="name")


class InvalidRowError(RowError):
    """A column value is not valid for the NB schema (type, enum, range)."""

    def __init__(self, owner: Any, table: str, key: str, column: str, value: Any,
                 reason: str) -> None:
        self.value = value
        super().__init__(
            f"{owner}: {table} row {key!r}: bad value for column {column!r}: {value!r} "
            f"({reason})",
            table=table, key=key, column=column)


class TransactionError(NorthdSyncError):
    """ovsdb-server rejected the transaction; nothing of it was written."""

    def __init__(self, owner: Any, error: str, rows: list[str]) -> None:
        self.error = error
        self.rows = rows
        shown = ", ".join(rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
        super().__init__(f"{owner}: the OVN Northbound DB rejected the transaction: {error}; "
                         f"rows in it: {shown or 'none'}")
