"""Retention on a real SQLite file: finished deliveries, their attempts and old callback ids go;
pending deliveries and messages stay."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway import events
from gateway.carriers.base import Callback, InboundSms
from gateway.changes import Outcome
from gateway.clock import ManualClock, format_time
from gateway.config import config_from_mapping
from gateway.models import Address, Customer, Direction, EventType, Message, Number
from gateway.retention import Retention
from gateway.signing import generate_webhook_secret
from gateway.store import Attempt, Store
from gateway.tracking import Tracker

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
OLD = format_time(NOW - dt.timedelta(days=31))
RECENT = format_time(NOW - dt.timedelta(days=29))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "retention.db")
    yield opened
    await opened.close()


async def add_delivery(store: Store, customer: Customer, state: str, tm_update: str) -> int:
    """One outbox event in `state`, last touched at `tm_update`, with one logged attempt."""
    message = Message(
        str(uuid.uuid4()), customer.id, "sms", Address("tel", "+15550000001"), (), "hi",
        Direction.INBOUND, tm_update,
    )  # fmt: skip
    async with store.transaction() as tx:
        await tx.insert_message(message, next_send_at=None, send_deadline_at=None)
        await tx.add_event(events.new_event_id(), EventType.MESSAGE_CREATED, message, b"{}", OLD)
        row = await tx.one("SELECT MAX(seq) AS seq FROM outbox")
        assert row is not None
        seq = int(row["seq"])
    attempt = Attempt(seq, 1, "scheduled", tm_update, "https://h.example/", 500, 1.0, "x", "")
    await store.finish_attempt(attempt, 0, state, None)  # logged, and the event now `state`
    return seq


async def count(store: Store, table: str) -> int:
    async with store.reading() as tx:
        row = await tx.one(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608 - our own names
    return int(row["n"]) if row else 0


async def test_old_finished_deliveries_and_callback_ids_go_and_the_rest_stays(
    store: Store,
) -> None:
    customer = Customer(
        str(uuid.uuid4()), "c", "https://h.example/", "POST", generate_webhook_secret(), OLD
    )
    await store.create_customer(customer)
    await add_delivery(store, customer, "delivered", OLD)
    await add_delivery(store, customer, "failed", OLD)
    kept = {
        await add_delivery(store, customer, "pending", OLD),  # still to be delivered
        await add_delivery(store, customer, "delivered", RECENT),  # within retention
    }
    async with store.transaction() as tx:
        assert await tx.remember_callback("twilio", "SM-old", OLD)
        assert await tx.remember_callback("twilio", "SM-recent", RECENT)

    retention = Retention(store, ManualClock(NOW), retention_days=30)
    assert await retention.run_once() == 3  # two deliveries, one callback id
    assert await retention.run_once() == 0

    async with store.reading() as tx:
        left = {int(row["seq"]) for row in await tx.all("SELECT seq FROM outbox")}
        attempts = {int(r["outbox_seq"]) for r in await tx.all("SELECT * FROM webhook_attempts")}
    assert left == kept
    assert attempts == kept  # each finished delivery's attempt log went with it
    assert await count(store, "messages") == 4  # messages are never pruned
    async with store.transaction() as tx:
        assert await tx.remember_callback("twilio", "SM-old", format_time(NOW))  # forgotten
        assert not await tx.remember_callback("twilio", "SM-recent", format_time(NOW))


async def test_zero_retention_days_keeps_everything(store: Store) -> None:
    customer = Customer(
        str(uuid.uuid4()), "c", "https://h.example/", "POST", generate_webhook_secret(), OLD
    )
    await store.create_customer(customer)
    await add_delivery(store, customer, "delivered", OLD)
    retention = Retention(store, ManualClock(NOW + dt.timedelta(days=3650)), retention_days=0)
    assert await retention.run_once() == 0
    assert await count(store, "outbox") == 1


async def test_an_inbound_sms_replayed_after_retention_is_still_a_duplicate(store: Store) -> None:
    customer = Customer(
        str(uuid.uuid4()), "c", "https://h.example/", "POST", generate_webhook_secret(), OLD
    )
    await store.create_customer(customer)
    await store.add_number(Number("+15550000001", customer.id, "twilio", OLD))
    clock = ManualClock(NOW)
    tracker = Tracker(store, clock, config_from_mapping({}, {}), lambda: None)
    # Twilio signs no timestamp: a captured callback verifies forever.
    callback = Callback("SM1", InboundSms("SM1", "+15557654321", "+15550000001", "hi"))
    assert await tracker.accept_callback("twilio", callback) is Outcome.APPLIED
    # A whole SMS to an owned number keeps no callback id: its carrier reference, kept for
    # good, tells a repeat.
    assert await count(store, "processed_callbacks") == 0
    clock.advance(31 * 86400)
    await Retention(store, clock, retention_days=30).run_once()
    assert await tracker.accept_callback("twilio", callback) is Outcome.DUPLICATE
    assert await count(store, "messages") == 1
    assert await count(store, "outbox") == 1  # one message_created, not two


async def test_an_unrouted_inbound_sms_repeated_is_a_duplicate(store: Store) -> None:
    """No message, so no carrier reference: its callback id tells the repeat."""
    tracker = Tracker(store, ManualClock(NOW), config_from_mapping({}, {}), lambda: None)
    callback = Callback("SM2", InboundSms("SM2", "+15557654321", "+15550000009", "hi"))
    assert await tracker.accept_callback("twilio", callback) is Outcome.UNROUTED
    assert await tracker.accept_callback("twilio", callback) is Outcome.DUPLICATE
    assert await count(store, "unrouted_inbound") == 1
