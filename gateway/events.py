"""Which changes become customer webhook events, and how events are named."""

from __future__ import annotations

import uuid

from gateway.clock import NEVER
from gateway.models import EventType, Message
from gateway.store import Tx


def new_event_id() -> str:
    """A Standard Webhooks `webhook-id`: unique per event, kept across its retries."""
    return f"msg_{uuid.uuid4().hex}"


async def should_notify(tx: Tx, message: Message, event_type: EventType) -> bool:
    """A customer with a webhook hears of every change, but nothing after a delete."""
    if message.tm_delete != NEVER and event_type is not EventType.MESSAGE_DELETED:
        return False
    customer = await tx.get_customer(message.customer_id)
    return customer is not None and bool(customer.webhook_uri)
