"""Storage: the only package that speaks SQL. SQLite is the embedded default."""

from gateway.store.deliveries import DeliveryLog, DeliveryQuery, DeliveryRecord, FailedRange
from gateway.store.records import (
    Attempt,
    AttemptOutcome,
    ClaimedEvents,
    DispatchJob,
    EndpointHealth,
    InboundKey,
    InboundPart,
    OutboxEvent,
    PendingReport,
    TargetRef,
)
from gateway.store.sqlite import Store
from gateway.store.tx import Tx, UnitFailed

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "ClaimedEvents",
    "DeliveryLog",
    "DeliveryQuery",
    "DeliveryRecord",
    "DispatchJob",
    "EndpointHealth",
    "FailedRange",
    "InboundKey",
    "InboundPart",
    "OutboxEvent",
    "PendingReport",
    "Store",
    "TargetRef",
    "Tx",
    "UnitFailed",
]
