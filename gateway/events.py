"""Which changes become customer webhook events, how they are named, and their body."""

from __future__ import annotations

import secrets
import time

import msgspec

from gateway.clock import NEVER
from gateway.models import EventType, Message, WebhookEvent
from gateway.store import Tx

# The largest body a customer receives. Standard Webhooks advises small payloads; only an inbound
# SMS of hundreds of parts comes near this, and then its text is cut (the API has it whole).
MAX_PAYLOAD_BYTES = 65536

_encoder = msgspec.json.Encoder()


def new_event_id() -> str:
    """A Standard Webhooks `webhook-id`: unique per event, kept across its retries. Time-ordered,
    as Svix's are (KSUIDs): 48 bits of Unix milliseconds, then 80 random bits, in hex. So a new
    id lands at the end of the outbox's unique index, not on a random page of it: one page
    written per commit for all its events instead of one per event (bench/RESULTS.md)."""
    return f"msg_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


async def should_notify(tx: Tx, message: Message, event_type: EventType) -> bool:
    """A customer with a webhook hears of every change, but nothing after a delete."""
    if message.tm_delete != NEVER and event_type is not EventType.MESSAGE_DELETED:
        return False
    return await tx.has_webhook(message.customer_id)


def event_body(event_type: EventType, message: Message) -> bytes:
    """`{"type", "data"}`, within MAX_PAYLOAD_BYTES (the message text cut if it must be)."""
    body = _encoder.encode(WebhookEvent(type=event_type, data=message))
    excess = len(body) - MAX_PAYLOAD_BYTES
    if excess <= 0:
        return body
    text = message.text.encode()[: max(0, len(message.text.encode()) - excess)]
    cut = msgspec.structs.replace(message, text=text.decode("utf-8", "ignore"))
    return _encoder.encode(WebhookEvent(type=event_type, data=cut))


async def notify(tx: Tx, event_type: EventType, message: Message, now: str) -> None:
    """Queue the event in the open transaction, if the customer is to hear of it."""
    if await should_notify(tx, message, event_type):
        body = event_body(event_type, message)
        await tx.add_event(new_event_id(), event_type, message, body, now)
