"""What the engine hands back: the outcome of an apply and of a sync."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from northd_sync.errors import NorthdSyncError
from northd_sync.rows import Owner


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
