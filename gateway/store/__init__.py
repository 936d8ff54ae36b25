"""Storage: the only package that speaks SQL. SQLite is the embedded default."""

from gateway.store.records import (
    Attempt,
    DispatchJob,
    InboundKey,
    InboundPart,
    OutboxEvent,
    PendingReport,
    TargetRef,
)
from gateway.store.sqlite import Store
from gateway.store.tx import Tx

__all__ = [
    "Attempt",
    "DispatchJob",
    "InboundKey",
    "InboundPart",
    "OutboxEvent",
    "PendingReport",
    "Store",
    "TargetRef",
    "Tx",
]
