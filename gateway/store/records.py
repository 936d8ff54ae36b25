"""Row records the store hands out, and the mappers from SQLite rows to domain records."""

from __future__ import annotations

import sqlite3

import msgspec

from gateway.models import Address, Customer, Direction, Message, Target, TargetStatus

_address_decoder = msgspec.json.Decoder(Address)


class TargetRef(msgspec.Struct, frozen=True):
    message_id: str
    idx: int


class DispatchJob(msgspec.Struct, frozen=True):
    """A queued target claimed for submission to its carrier."""

    message_id: str
    idx: int
    carrier: str
    source: str
    destination: str
    text: str
    send_deadline_at: str
    send_attempts: int


class OutboxEvent(msgspec.Struct, frozen=True):
    """A customer webhook event claimed for one delivery attempt."""

    seq: int
    event_id: str
    customer_id: str
    message_id: str
    event_type: str
    body: bytes
    attempts: int
    trigger: str
    requeues: int  # as claimed: a requeue (resend, recover) since then increments it


class ClaimedEvents(msgspec.Struct, frozen=True):
    """Events leased for attempts, and their endpoints' customers as they are at the claim."""

    events: list[OutboxEvent]
    customers: dict[str, Customer]


class Attempt(msgspec.Struct, frozen=True):
    """One delivery attempt, as recorded in the attempt log."""

    outbox_seq: int
    attempt_number: int
    trigger: str
    tm_attempt: str
    url: str
    status_code: int
    duration_ms: float
    error: str
    response_excerpt: str
    # timeout | connection | redirect | http_4xx | http_5xx | blocked | no_endpoint | disabled
    error_class: str = ""


class EndpointHealth(msgspec.Struct, frozen=True):
    """What one attempt says of a customer's endpoint."""

    customer_id: str
    succeeded: bool
    at: str  # the attempt's time
    disable_reason: str = ""  # set: disable the endpoint now, with this reason...
    # ...but, when set, only if its run of failures still began at or before this time: an
    # operator may have re-enabled it while this attempt was in flight.
    failing_before: str = ""


class AttemptOutcome(msgspec.Struct, frozen=True):
    """One finished attempt and what follows from it, ready to be written."""

    attempt: Attempt
    requeues: int  # as claimed: the write stands down if the event was requeued meanwhile
    state: str
    next_attempt_at: str | None
    health: EndpointHealth | None = None


class InboundKey(msgspec.Struct, frozen=True):
    """Identifies the parts of one concatenated inbound SMS."""

    carrier: str
    source: str
    destination: str
    concat_ref: str


class InboundPart(msgspec.Struct, frozen=True):
    carrier: str
    source: str
    destination: str
    concat_ref: str
    part: int
    total: int
    text: str
    carrier_message_id: str
    tm_create: str

    @property
    def key(self) -> InboundKey:
        return InboundKey(self.carrier, self.source, self.destination, self.concat_ref)


class PendingReport(msgspec.Struct, frozen=True):
    """A delivery report that arrived before the send that it reports was recorded."""

    status: str
    carrier_status: str
    error_code: str
    parts: int


def customer_from(row: sqlite3.Row) -> Customer:
    return msgspec.convert(dict(row), Customer)


def target_from(row: sqlite3.Row) -> Target:
    return Target(
        destination=_address_decoder.decode(row["destination"]),
        status=TargetStatus(row["status"]),
        parts=row["parts"],
        tm_update=row["tm_update"],
        carrier=row["carrier"],
        carrier_status=row["carrier_status"],
        error_code=row["error_code"],
    )


def message_from(row: sqlite3.Row, targets: list[Target]) -> Message:
    return Message(
        id=row["id"],
        customer_id=row["customer_id"],
        type="sms",
        source=_address_decoder.decode(row["source"]),
        targets=tuple(targets),
        text=row["text"],
        direction=Direction(row["direction"]),
        tm_create=row["tm_create"],
        tm_update=row["tm_update"],
        tm_delete=row["tm_delete"],
    )


def dispatch_job_from(row: sqlite3.Row) -> DispatchJob:
    return DispatchJob(
        message_id=row["message_id"],
        idx=row["idx"],
        carrier=row["carrier"],
        source=_address_decoder.decode(row["source"]).target,
        destination=_address_decoder.decode(row["destination"]).target,
        text=row["text"],
        send_deadline_at=row["send_deadline_at"],
        send_attempts=row["send_attempts"],
    )


def outbox_event_from(row: sqlite3.Row) -> OutboxEvent:
    return OutboxEvent(
        seq=row["seq"],
        event_id=row["event_id"],
        customer_id=row["customer_id"],
        message_id=row["message_id"],
        event_type=row["event_type"],
        body=bytes(row["body"]),
        attempts=row["attempts"],
        trigger=row["trigger"],
        requeues=row["requeues"],
    )
