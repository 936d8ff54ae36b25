"""Inbound SMS: routed to the number's owner as an inbound Message; parts of a concatenated
SMS are kept until all have come (or the wait runs out), then joined in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway import events, segments
from gateway.carriers.base import InboundSms
from gateway.changes import Outcome
from gateway.ids import new_message_id
from gateway.models import Address, Direction, EventType, Message, Target, TargetStatus
from gateway.store import InboundPart, TargetRef, Tx

# Remembers the callback's id; False if it was seen before (a repeat).
Remember = Callable[[], Awaitable[bool]]


async def receive(
    tx: Tx,
    carrier: str,
    sms: InboundSms,
    now: str,
    remember: Remember | None = None,
    waiting_since: str | None = None,
) -> Outcome:
    """Store one inbound SMS (or one part of it) in the open transaction. `remember` is called
    where the callback's id is needed to tell a repeat (None: no callback, e.g. parts joined
    when their wait ran out). A part waits for the rest from `waiting_since` (default `now`)."""
    concat = sms.concat
    if concat is None or concat.total <= 1:
        return await _create(tx, carrier, sms, now, remember)
    if remember is not None and not await remember():
        return Outcome.DUPLICATE
    part = InboundPart(
        carrier, sms.source, sms.destination, concat.ref, concat.part, concat.total, sms.text,
        sms.carrier_message_id, waiting_since or now,
    )  # fmt: skip
    if await tx.add_inbound_part(part) < concat.total:
        return Outcome.BUFFERED
    parts = await tx.take_inbound_parts(part.key)
    return await _create(tx, carrier, joined(parts), now, None)  # each part's id is remembered


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


async def _create(
    tx: Tx, carrier: str, sms: InboundSms, now: str, remember: Remember | None
) -> Outcome:
    # The carrier's id is kept for good (callback ids are pruned with retention), so a replay of
    # an old callback from a carrier that signs no timestamp (Twilio, Plivo) still makes nothing.
    if sms.carrier_message_id and await tx.find_target(carrier, sms.carrier_message_id):
        return Outcome.DUPLICATE
    number = await tx.get_number(sms.destination)
    # A message with the carrier's id gets that reference, which tells a repeat for good: its
    # callback id is not written too (one random index page less per callback,
    # bench/RESULTS.md). Unrouted SMS, and those without the carrier's id, need it.
    needs_id = number is None or not sms.carrier_message_id
    if needs_id and remember is not None and not await remember():
        return Outcome.DUPLICATE
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
        id=new_message_id(),
        customer_id=number.customer_id,
        type="sms",
        source=Address("tel", sms.source),
        targets=(target,),
        text=sms.text,
        direction=Direction.INBOUND,
        tm_create=now,
    )
    await tx.insert_message(message, None, None, carrier_message_id=sms.carrier_message_id)
    await tx.index_carrier_ref(carrier, sms.carrier_message_id, TargetRef(message.id, 0))
    await events.notify(tx, EventType.MESSAGE_CREATED, message, now)
    return Outcome.APPLIED
