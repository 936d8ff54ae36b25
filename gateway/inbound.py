"""Inbound SMS: routed to the number's owner as an inbound Message; parts of a concatenated
SMS are kept until all have come (or the wait runs out), then joined in order."""

from __future__ import annotations

import uuid

from gateway import events, segments
from gateway.carriers.base import InboundSms
from gateway.changes import Outcome
from gateway.models import Address, Direction, EventType, Message, Target, TargetStatus
from gateway.store import InboundPart, TargetRef, Tx


async def receive(
    tx: Tx, carrier: str, sms: InboundSms, now: str, waiting_since: str | None = None
) -> Outcome:
    """Store one inbound SMS (or one part of it) in the open transaction. A part waits for the
    rest from `waiting_since` (default `now`)."""
    concat = sms.concat
    if concat is None or concat.total <= 1:
        return await _create(tx, carrier, sms, now)
    part = InboundPart(
        carrier, sms.source, sms.destination, concat.ref, concat.part, concat.total, sms.text,
        sms.carrier_message_id, waiting_since or now,
    )  # fmt: skip
    if await tx.add_inbound_part(part) < concat.total:
        return Outcome.BUFFERED
    return await _create(tx, carrier, joined(await tx.take_inbound_parts(part.key)), now)


async def needs_callback_key(tx: Tx, sms: InboundSms) -> bool:
    """Whether a callback carrying `sms` must have its id remembered to tell a repeat. Not for
    a whole SMS with the carrier's id, to a number someone owns: the carrier_refs row it gets,
    kept for good, tells a repeat already, and one random index page less is written per
    callback (bench/RESULTS.md). Parts and unrouted SMS have no such row."""
    whole = sms.concat is None or sms.concat.total <= 1
    if not whole or not sms.carrier_message_id:
        return True
    return await tx.get_number(sms.destination) is None


def joined(parts: list[InboundPart]) -> InboundSms:
    """One SMS from its parts (in part order; missing parts are simply absent)."""
    first = parts[0]
    return InboundSms(
        carrier_message_id=first.carrier_message_id,
        source=first.source,
        destination=first.destination,
        text="".join(part.text for part in parts),
        parts=len(parts),
    )


async def _create(tx: Tx, carrier: str, sms: InboundSms, now: str) -> Outcome:
    # The carrier's id is kept for good (callback ids are pruned with retention), so a replay of
    # an old callback from a carrier that signs no timestamp (Twilio, Plivo) still makes nothing.
    if sms.carrier_message_id and await tx.find_target(carrier, sms.carrier_message_id):
        return Outcome.DUPLICATE
    number = await tx.get_number(sms.destination)
    if number is None:
        await tx.add_unrouted(
            carrier, sms.source, sms.destination, sms.text, sms.carrier_message_id, now
        )
        return Outcome.UNROUTED
    target = Target(
        destination=Address("tel", sms.destination),
        status=TargetStatus.RECEIVED,
        parts=sms.parts or segments.count_parts(sms.text),
        tm_update=now,
        carrier=carrier,
        carrier_status="received",
    )
    message = Message(
        id=str(uuid.uuid4()),
        customer_id=number.customer_id,
        type="sms",
        source=Address("tel", sms.source),
        targets=(target,),
        text=sms.text,
        direction=Direction.INBOUND,
        tm_create=now,
    )
    await tx.insert_message(message, next_send_at=None, send_deadline_at=None)
    await tx.add_carrier_ref(carrier, sms.carrier_message_id, TargetRef(message.id, 0))
    await events.notify(tx, EventType.MESSAGE_CREATED, message, now)
    return Outcome.APPLIED
