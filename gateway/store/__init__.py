"""Storage: the only package that speaks SQL. SQLite is the embedded default."""

from gateway.store.sqlite import (
    Attempt,
    DispatchJob,
    OutboxEvent,
    PendingReport,
    Store,
    TargetRef,
    Tx,
)

__all__ = ["Attempt", "DispatchJob", "OutboxEvent", "PendingReport", "Store", "TargetRef", "Tx"]
