"""The engine's Prometheus metrics: the only counters it keeps.

`Metrics.totals()` reads them back as the plain numbers `NorthdSync.counters()`
has always returned, so tests and benchmarks see what /metrics exports.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: apply outcomes, as labelled on northd_sync_applies
APPLY_RESULTS = ("changed", "unchanged", "error")


class Metrics:
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
        self.applied = {r: self.applies.labels(r) for r in APPLY_RESULTS}
        self.connected = Gauge(
            "northd_sync_connected", "1 while connected to the NB DB (the leader if clustered)",
            registry=registry)

    def text(self) -> str:
        """The Prometheus exposition of the registry."""
        return generate_latest(self.registry).decode()

    def totals(self) -> dict[str, int]:
        """transactions (sent), transactions_success/_try_again/_error,
        rows_written (mutations of parent rows not counted), reconnects,
        applies, applies_unchanged, applies_failed."""
        tx = _by_label(self.transactions, "result")
        applies = _by_label(self.applies, "result")
        rows = sum(n for labels, n in _samples(self.rows) if labels.get("op") != "mutate")
        return {
            "transactions": sum(tx.values()),
            "transactions_success": tx.get("success", 0),
            "transactions_try_again": tx.get("try_again", 0),
            "transactions_error": tx.get("error", 0),
            "rows_written": rows,
            "reconnects": sum(n for _, n in _samples(self.reconnects)),
            "applies": sum(applies.values()),
            "applies_unchanged": applies.get("unchanged", 0),
            "applies_failed": applies.get("error", 0),
        }


def _samples(counter: Counter) -> list[tuple[dict[str, str], int]]:
    return [(s.labels, int(s.value)) for m in counter.collect() for s in m.samples
            if s.name.endswith("_total")]


def _by_label(counter: Counter, label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, n in _samples(counter):
        out[labels[label]] = out.get(labels[label], 0) + n
    return out
