"""The contract's records: Message, Target, Address, statuses and webhook events."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec

from gateway.clock import NEVER


class TargetStatus(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    GW_TIMEOUT = "gw_timeout"
    DLR_TIMEOUT = "dlr_timeout"
    RECEIVED = "received"


# Statuses only move up this ladder. dlr_timeout sits between sent and the final reports,
# so a late delivered/failed still replaces it; gw_timeout and received are terminal.
_RANK = {
    TargetStatus.QUEUED: 0,
    TargetStatus.SENT: 1,
    TargetStatus.DLR_TIMEOUT: 2,
    TargetStatus.DELIVERED: 3,
    TargetStatus.FAILED: 3,
    TargetStatus.GW_TIMEOUT: 3,
    TargetStatus.RECEIVED: 3,
}


def advance_status(current: TargetStatus, reported: TargetStatus) -> TargetStatus | None:
    """The status after a report, or None when the report must change nothing."""
    if _RANK[reported] > _RANK[current]:
        return reported
    return None


class Direction(enum.StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class Address(msgspec.Struct, frozen=True):
    type: str = "tel"
    target: str = ""
    target_name: str = ""
    name: str = ""
    detail: str = ""


class Target(msgspec.Struct, frozen=True):
    destination: Address
    status: TargetStatus
    parts: int
    tm_update: str = NEVER
    # Extra fields VoIPBIN lacks (the contract allows additions): the carrier's own words.
    carrier: str = ""
    carrier_status: str = ""
    error_code: str = ""


# The spec's UUIDv4, made by gateway/ids.py: its first 48 bits are the creation millisecond.
MESSAGE_ID_DESCRIPTION = (
    "UUIDv4 text (version 4, RFC variant, lower case) whose first 48 bits are the creation "
    "time in Unix milliseconds, as COMB GUIDs do; the other 74 bits are random"
)


class Message(msgspec.Struct, frozen=True):
    id: Annotated[str, msgspec.Meta(description=MESSAGE_ID_DESCRIPTION)]
    customer_id: str
    type: Literal["sms"]
    source: Address
    targets: tuple[Target, ...]
    text: str
    direction: Direction
    tm_create: str
    tm_update: str = NEVER
    tm_delete: str = NEVER


class EventType(enum.StrEnum):
    MESSAGE_CREATED = "message_created"
    MESSAGE_UPDATED = "message_updated"
    MESSAGE_DELETED = "message_deleted"


class WebhookEvent(msgspec.Struct, frozen=True):
    """The exact body a customer webhook receives."""

    type: EventType
    data: Message


class MessagePage(msgspec.Struct, frozen=True):
    result: tuple[Message, ...]
    next_page_token: str


class Customer(msgspec.Struct, frozen=True):
    id: str
    name: str
    webhook_uri: str
    webhook_method: str
    webhook_secret: str
    tm_create: str
    # Endpoint health: set when the endpoint answered 410 Gone or kept failing past the window.
    webhook_disabled_at: str = ""
    webhook_disabled_reason: str = ""
    webhook_failing_since: str = ""  # the first failure of the current unbroken run
    # Rotation: the previous secret signs alongside the current one until it expires.
    previous_webhook_secret: str = ""
    previous_secret_expires_at: str = ""


class Number(msgspec.Struct, frozen=True):
    number: str
    customer_id: str
    carrier: str
    tm_create: str


class ErrorBody(msgspec.Struct, frozen=True):
    status: str
    reason: str
    message: str
    request_id: str


class ErrorEnvelope(msgspec.Struct, frozen=True):
    """Every API error: `{"error": {"status", "reason", "message", "request_id"}}`."""

    error: ErrorBody
