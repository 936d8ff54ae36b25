"""Svix-level delivery rules: 410, Retry-After, overload penalties, jitter, auto-disable,
isolation of a dead endpoint, and signing with a rotated secret."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import email.utils
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from gateway import events
from gateway.clock import ManualClock, format_time
from gateway.delivery_policy import Answer, ErrorClass, next_delay_s, retry_after_s
from gateway.models import Address, Customer, Direction, EventType, Message
from gateway.signing import generate_webhook_secret
from gateway.store import (
    Attempt,
    AttemptOutcome,
    ClaimedEvents,
    EndpointHealth,
    OutboxEvent,
    Store,
    Tx,
)
from gateway.store.tx import InThread
from gateway.webhook_attempt import signatures
from tests.conftest import (
    CustomerEndpoint,
    GatewayServer,
    ServedApp,
    ServerFactory,
    Tenant,
    eventually,
    free_socket,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def setup(
    start_gateway: ServerFactory, endpoint: CustomerEndpoint, **webhooks: Any
) -> tuple[GatewayServer, ManualClock, Tenant]:
    clock = ManualClock(START)
    server = await start_gateway(clock=clock, run_workers=False, webhooks=webhooks)
    tenant = await server.add_tenant("+15550000001", webhook_uri=endpoint.url)
    return server, clock, tenant


async def send(server: GatewayServer, tenant: Tenant) -> str:
    return str((await server.send(tenant, ["+15550000002"])).json()["id"])


async def customer(server: GatewayServer, tenant: Tenant) -> Customer:
    found = await server.gateway.store.get_customer(tenant.id)
    assert found is not None
    return found


async def step(server: GatewayServer) -> int:
    return await server.gateway.deliverer.run_once()


# 410 Gone and auto-disable -----------------------------------------------------------------------


async def test_410_disables_the_endpoint_and_its_events_wait(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await setup(start_gateway, customer_endpoint)
    customer_endpoint.statuses = [410]
    message_id = await send(server, tenant)
    assert await step(server) == 1
    disabled = await customer(server, tenant)
    assert disabled.webhook_disabled_at == format_time(START)
    assert "410" in disabled.webhook_disabled_reason
    await send(server, tenant)
    clock.advance(3600)
    assert await step(server) == 0  # nothing goes to a disabled endpoint
    assert len(customer_endpoint.received) == 1
    assert await server.gateway.store.outbox_states(message_id) == [
        ("message_created", "pending", 1)
    ]
    async with server.gateway.store.transaction() as tx:  # the operator re-enables it
        await tx.execute("UPDATE customers SET webhook_disabled_at = '' WHERE id = ?", (tenant.id,))
    assert await step(server) == 2  # both waiting events, one per message
    assert len(customer_endpoint.received) == 3


async def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await setup(
        start_gateway, customer_endpoint, disable_after_s=1000, retry_schedule_s=[100] * 20
    )
    customer_endpoint.statuses = [500, 500, 200, 500] + [500] * 20
    await send(server, tenant)
    await step(server)
    assert (await customer(server, tenant)).webhook_failing_since == format_time(START)
    clock.advance(100)
    await step(server)
    clock.advance(100)
    await step(server)  # a success ends the run of failures
    assert (await customer(server, tenant)).webhook_failing_since == ""
    await send(server, tenant)
    await step(server)
    since = (await customer(server, tenant)).webhook_failing_since
    assert since == format_time(clock.now())
    for _ in range(9):
        clock.advance(100)
        await step(server)
        assert (await customer(server, tenant)).webhook_disabled_at == ""
    clock.advance(100)  # 1000 s of nothing but failures
    await step(server)
    disabled = await customer(server, tenant)
    assert disabled.webhook_disabled_at == format_time(clock.now())
    assert "failed for" in disabled.webhook_disabled_reason


# Retry-After, overload and jitter ---------------------------------------------------------------


async def test_retry_after_seconds_stretches_the_wait(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await setup(start_gateway, customer_endpoint)
    customer_endpoint.statuses = [503]
    customer_endpoint.headers = [(b"retry-after", b"120")]
    await send(server, tenant)
    await step(server)
    clock.advance(119)
    assert await step(server) == 0  # the schedule said 5 s; the endpoint asked for 120
    clock.advance(1)
    assert await step(server) == 1


def test_retry_after_is_seconds_or_an_http_date_and_bounded() -> None:
    now = START
    date = email.utils.format_datetime(now + dt.timedelta(seconds=90), usegmt=True)
    assert retry_after_s("30", now) == 30
    assert retry_after_s(date, now) == 90
    assert retry_after_s("soon", now) is None
    rng = random.Random(1)
    answer = Answer(503, ErrorClass.HTTP_5XX, "HTTP 503", retry_after="2")
    assert next_delay_s(300, answer, now, 0, rng) == 300  # never sooner than the schedule
    huge = Answer(503, ErrorClass.HTTP_5XX, "HTTP 503", retry_after=str(10**9))
    assert next_delay_s(5, huge, now, 0, rng) == 86400  # never past a day


@pytest.mark.parametrize(
    "answer",
    [Answer(429, ErrorClass.HTTP_4XX, "HTTP 429"), Answer(0, ErrorClass.TIMEOUT, "timeout")],
)
def test_overload_waits_at_least_a_minute(answer: Answer) -> None:
    rng = random.Random(1)
    assert next_delay_s(5, answer, START, 0, rng) == 60
    assert next_delay_s(300, answer, START, 0, rng) == 300
    other = Answer(500, ErrorClass.HTTP_5XX, "HTTP 500")
    assert next_delay_s(5, other, START, 0, rng) == 5


def test_jitter_spreads_delays_within_twenty_percent() -> None:
    rng = random.Random(7)
    answer = Answer(500, ErrorClass.HTTP_5XX, "HTTP 500")
    delays = [next_delay_s(300, answer, START, 0.2, rng) for _ in range(200)]
    assert all(240 <= delay <= 360 for delay in delays)
    assert len(set(delays)) > 150  # spread, so retries of many events do not stampede


# Isolation ---------------------------------------------------------------------------------------


class DeadEndpoint:
    """Accepts requests and never answers until released; counts requests in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.served: ServedApp | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def dead_endpoint() -> AsyncIterator[DeadEndpoint]:
    dead = DeadEndpoint()
    dead.served = ServedApp(dead, free_socket())
    await dead.served.start()
    yield dead
    dead.release.set()
    await dead.served.stop()


async def test_a_dead_endpoint_never_holds_back_a_healthy_one(
    start_gateway: ServerFactory,
    customer_endpoint: CustomerEndpoint,
    dead_endpoint: DeadEndpoint,
) -> None:
    server = await start_gateway(
        webhooks={"timeout_s": 30, "per_endpoint_concurrency": 2, "concurrency": 8}
    )
    assert dead_endpoint.served is not None
    dead = await server.add_tenant("+15550000001", webhook_uri=dead_endpoint.served.url + "/h")
    healthy = await server.add_tenant("+15550000002", webhook_uri=customer_endpoint.url)
    for _ in range(6):  # queued first, each waiting on the dead endpoint
        await server.send(dead, ["+15550000003"])
    for _ in range(10):
        await server.send(healthy, ["+15550000003"])

    async def all_healthy_created() -> bool:
        kinds = [r.json()["type"] for r in customer_endpoint.received]
        return kinds.count("message_created") == 10

    await eventually(all_healthy_created)
    # The healthy endpoint got everything while the dead one still held its slots, and no more.
    assert dead_endpoint.in_flight == 2
    assert dead_endpoint.most_in_flight == 2


# Secret rotation ------------------------------------------------------------------------------


def rotated(previous_expires: dt.datetime) -> Customer:
    return Customer(
        "c", "n", "http://x", "POST", generate_webhook_secret(), format_time(START),
        previous_webhook_secret=generate_webhook_secret(),
        previous_secret_expires_at=format_time(previous_expires),
    )  # fmt: skip


def test_a_rotated_secret_signs_alongside_the_old_one_until_it_expires() -> None:
    now = dt.datetime.now(dt.UTC)
    customer = rotated(now + dt.timedelta(hours=24))
    body = msgspec.json.encode({"type": "message_created", "data": {}})
    timestamp = int(now.timestamp())
    header = signatures(customer, "msg_1", timestamp, body)
    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(timestamp),
               "webhook-signature": header}  # fmt: skip
    for secret in (customer.webhook_secret, customer.previous_webhook_secret):
        Webhook(secret).verify(body, headers)  # the official library, with either secret
    expired = rotated(now - dt.timedelta(seconds=1))
    assert len(signatures(expired, "msg_1", timestamp, body).split(" ")) == 1


# Payload size ------------------------------------------------------------------------------------


def test_an_oversized_event_is_cut_to_the_cap_and_stays_valid_json() -> None:
    from gateway.events import MAX_PAYLOAD_BYTES, event_body
    from gateway.models import Address, Direction, EventType, Message

    text = "\u00e9" * 40000  # 80 000 bytes of UTF-8
    message = Message("m", "c", "sms", Address(), (), text, Direction.INBOUND, format_time(START))
    body = event_body(EventType.MESSAGE_CREATED, message)
    assert len(body) <= MAX_PAYLOAD_BYTES
    data = msgspec.json.decode(body)["data"]
    assert text.startswith(data["text"])
    assert len(data["text"]) > 30000
    small = Message("m", "c", "sms", Address(), (), "hi", Direction.INBOUND, format_time(START))
    assert msgspec.json.decode(event_body(EventType.MESSAGE_CREATED, small))["data"]["text"] == "hi"


# The address guard at delivery time -------------------------------------------------------------


def resolving(table: dict[str, list[str]]) -> Any:
    """A resolver that answers from `table` and counts its lookups (DNS is not used in tests)."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


async def test_a_name_that_resolves_to_a_blocked_address_is_never_contacted(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    resolver = resolving({"hooks.customer.example": ["127.0.0.1"]})
    server = await start_gateway(
        clock=ManualClock(START), run_workers=False, resolver=resolver,
        webhooks={"allowed_networks": []},
    )  # fmt: skip
    assert customer_endpoint.served is not None
    port = customer_endpoint.served.port
    tenant = await server.add_tenant(
        "+15550000001", webhook_uri=f"http://hooks.customer.example:{port}/hook"
    )
    message_id = await send(server, tenant)
    await step(server)
    assert customer_endpoint.received == []
    assert resolver.calls == ["hooks.customer.example"]  # resolved at delivery, by the guard
    [(_, state, attempts)] = await server.gateway.store.outbox_states(message_id)
    assert (state, attempts) == ("pending", 1)  # retried on the schedule: DNS may change


async def test_delivery_goes_to_the_checked_address_with_the_original_host(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    resolver = resolving({"hooks.customer.example": ["127.0.0.1"]})
    server = await start_gateway(
        clock=ManualClock(START), run_workers=False, resolver=resolver,
        webhooks={"allowed_networks": ["127.0.0.0/8"]},
    )  # fmt: skip
    assert customer_endpoint.served is not None
    port = customer_endpoint.served.port
    tenant = await server.add_tenant(
        "+15550000001", webhook_uri=f"http://hooks.customer.example:{port}/hook?k=1"
    )
    await send(server, tenant)
    await step(server)
    [received] = customer_endpoint.received  # it reached 127.0.0.1, the address that was checked
    assert received.headers["host"] == f"hooks.customer.example:{port}"
    assert received.path == "/hook"


# Races with operators, hostile answers, slow DNS ------------------------------------------------


async def test_a_resend_during_an_attempt_neither_overtakes_nor_vanishes(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await setup(start_gateway, customer_endpoint)
    store = server.gateway.store
    message_id = await send(server, tenant)
    await step(server)  # message_created delivered
    await server.gateway.dispatcher.submit_due()  # the target is sent: message_updated queued
    now = format_time(clock.now())
    lease = format_time(clock.now() + dt.timedelta(seconds=60))
    [in_flight] = (await store.claim_due_events(now, lease, 10, 10, {})).events
    assert in_flight.event_type == "message_updated"
    assert await store.requeue_message_events(message_id, now) == 2  # an operator's resend
    claimed = await store.claim_due_events(now, lease, 10, 10, {})
    assert claimed.events == []  # created must not overtake
    attempt = Attempt(in_flight.seq, 1, "scheduled", now, "u", 200, 1.0, "", "")
    await store.finish_attempt(attempt, in_flight.requeues, "delivered", None)
    states = await store.outbox_states(message_id)
    assert [state for _, state, _ in states] == ["pending", "pending"]  # the resend stands
    [head] = (await store.claim_due_events(now, lease, 10, 10, {})).events
    assert head.event_type == "message_created"  # in order again


def test_a_retry_after_that_only_looks_numeric_is_ignored() -> None:
    assert retry_after_s("\u00b2", START) is None
    answer = Answer(503, ErrorClass.HTTP_5XX, "HTTP 503", retry_after="\u00b2")
    assert next_delay_s(5, answer, START, 0, random.Random(1)) == 5


async def test_slow_dns_is_inside_the_attempt_timeout(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    async def stalls(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["127.0.0.1"]

    server = await start_gateway(
        clock=ManualClock(START), run_workers=False, resolver=stalls, webhooks={"timeout_s": 0.2}
    )
    tenant = await server.add_tenant("+15550000001", webhook_uri="http://slow.example/hook")
    message_id = await send(server, tenant)
    async with asyncio.timeout(5):
        assert await step(server) == 1
    async with server.gateway.store.reading() as tx:
        row = await tx.one("SELECT event_id FROM outbox WHERE message_id = ?", (message_id,))
    assert row is not None
    [attempt] = await server.gateway.store.list_attempts(row["event_id"])
    assert attempt.error_class == "timeout"


async def test_an_endpoint_re_enabled_during_an_attempt_stays_enabled(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, _, tenant = await setup(start_gateway, customer_endpoint)
    store = server.gateway.store
    earlier = format_time(START)
    async with store.transaction() as tx:  # re-enabled; a new failure run began just now
        await tx.execute(
            "UPDATE customers SET webhook_failing_since = ? WHERE id = ?",
            (format_time(START + dt.timedelta(days=6)), tenant.id),
        )
        stale = EndpointHealth(tenant.id, False, earlier, "failed for 5 days", earlier)
        await tx.record_endpoint_health(stale)
    assert (await customer(server, tenant)).webhook_disabled_at == ""


# Claims, straight on the store -------------------------------------------------------------------


async def stored_customers(store: Store, *names: str) -> list[Customer]:
    """Customers with a webhook, in the store."""
    now = format_time(START)
    customers = [
        Customer(str(uuid.uuid4()), name, "http://127.0.0.1:9/h", "POST",
                 generate_webhook_secret(), now)
        for name in names
    ]  # fmt: skip
    for customer in customers:
        await store.create_customer(customer)
    return customers


def a_message(customer: Customer) -> Message:
    return Message(
        str(uuid.uuid4()), customer.id, "sms", Address("tel", "+15550000001"), (), "hi",
        Direction.INBOUND, format_time(START),
    )  # fmt: skip


async def queue_events(store: Store, *counts: tuple[Customer, int]) -> None:
    """`count` message_created events for each customer, one message each, in the given order."""
    now = format_time(START)
    async with store.transaction() as tx:
        for customer, count in counts:
            for _ in range(count):
                message = a_message(customer)
                body = events.event_body(EventType.MESSAGE_CREATED, message)
                await tx.add_event(
                    events.new_event_id(), EventType.MESSAGE_CREATED, message, body, now
                )


async def test_one_endpoints_backlog_never_crowds_another_out_of_a_claim(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "claim.db")
    try:
        now = format_time(START)
        backlogged, healthy = await stored_customers(store, "backlogged", "healthy")
        await queue_events(store, (backlogged, 300), (healthy, 3))  # the backlog comes first
        lease = format_time(START + dt.timedelta(seconds=60))
        claimed = (await store.claim_due_events(now, lease, 8, 4, {})).events
        per_customer = collections.Counter(event.customer_id for event in claimed)
        assert per_customer == {backlogged.id: 4, healthy.id: 3}
    finally:
        await store.close()


CLAIMED_AT = format_time(START)
LEASED_UNTIL = format_time(START + dt.timedelta(seconds=60))


@contextlib.asynccontextmanager
async def claimed_events(
    tmp_path: Path, count: int
) -> AsyncIterator[tuple[Store, Customer, ClaimedEvents]]:
    """A store with one customer's `count` events queued, all of them claimed at START."""
    store = await Store.open(tmp_path / "claimed.db")
    try:
        [customer] = await stored_customers(store, "claimed")
        await queue_events(store, (customer, count))
        claimed = await store.claim_due_events(CLAIMED_AT, LEASED_UNTIL, 8, 8, {})
        yield store, customer, claimed
    finally:
        await store.close()


def delivered(
    event: OutboxEvent, customer: Customer, duration_ms: float = 1.0, excerpt: str = ""
) -> AttemptOutcome:
    """A first attempt's outcome: 200, delivered, the endpoint healthy."""
    attempt = Attempt(event.seq, 1, "scheduled", CLAIMED_AT, "u", 200, duration_ms, "", excerpt)
    health = EndpointHealth(customer.id, True, CLAIMED_AT)
    return AttemptOutcome(attempt, event.requeues, "delivered", None, health)


async def test_a_batch_of_successes_records_each_and_leaves_a_resent_event_to_go_again(
    tmp_path: Path,
) -> None:
    async with claimed_events(tmp_path, 3) as (store, customer, claimed):
        assert len(claimed.events) == 3
        resent = claimed.events[1]
        assert await store.requeue_message_events(resent.message_id, CLAIMED_AT) == 1
        await store.finish_attempts([delivered(e, customer, 1.5, "ok") for e in claimed.events])
        for event in claimed.events:
            [(_, state, attempts)] = await store.outbox_states(event.message_id)
            assert (state, attempts) == ("pending" if event is resent else "delivered", 1)
            [logged] = await store.list_attempts(event.event_id)
            assert (logged.status_code, logged.duration_ms, logged.response_excerpt) == (
                200, 1.5, "ok",
            )  # fmt: skip
        [again] = (await store.claim_due_events(CLAIMED_AT, LEASED_UNTIL, 8, 8, {})).events
        assert again.seq == resent.seq  # the resend stands: it goes out again


async def test_one_event_finished_twice_in_a_batch_counts_two_attempts(tmp_path: Path) -> None:
    # A lease that ran out mid-attempt lets the event be claimed and attempted again: both
    # attempts can land in one group commit. One UPDATE per batch would count only one.
    async with claimed_events(tmp_path, 1) as (store, customer, claimed):
        [event] = claimed.events
        await store.finish_attempts([delivered(event, customer), delivered(event, customer)])
        assert await store.outbox_states(event.message_id) == [("message_created", "delivered", 2)]
        assert len(await store.list_attempts(event.event_id)) == 2


async def test_a_batch_with_nothing_requeued_looks_for_no_requeue(tmp_path: Path) -> None:
    # The follow-up query runs only when the batch UPDATE touched fewer rows than it had
    # attempts: a rowcount sqlite3 does not report for every statement shape (e506a2a).
    async with claimed_events(tmp_path, 3) as (_, customer, claimed):
        raw = sqlite3.connect(tmp_path / "claimed.db", isolation_level=None)
        statements: list[str] = []
        raw.set_trace_callback(statements.append)
        try:
            await Tx(InThread(raw)).finish_attempts([
                delivered(e, customer) for e in claimed.events
            ])  # fmt: skip
            states = raw.execute("SELECT state, attempts FROM outbox").fetchall()
        finally:
            raw.close()
    assert states == [("delivered", 1)] * 3
    assert not [sql for sql in statements if "requeues !=" in sql]


async def test_released_events_can_be_claimed_again_at_once(tmp_path: Path) -> None:
    async with claimed_events(tmp_path, 3) as (store, customer, first):
        assert first.customers == {customer.id: customer}
        assert (await store.claim_due_events(CLAIMED_AT, LEASED_UNTIL, 8, 8, {})).events == []
        await store.release_events([event.seq for event in first.events[:2]])
        again = (await store.claim_due_events(CLAIMED_AT, LEASED_UNTIL, 8, 8, {})).events
        assert [e.seq for e in again] == [e.seq for e in first.events[:2]]


async def test_a_claim_takes_no_more_than_each_endpoints_room(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "room.db")
    try:
        now = format_time(START)
        probing, half_full, paused, other = await stored_customers(store, "p", "h", "z", "o")
        await queue_events(
            store, *((customer, 5) for customer in (probing, half_full, paused, other))
        )
        lease = format_time(START + dt.timedelta(seconds=60))
        room = {probing.id: 1, half_full.id: 2, paused.id: 0}
        claimed = (await store.claim_due_events(now, lease, 64, 4, room)).events
        per_customer = collections.Counter(event.customer_id for event in claimed)
        assert per_customer == {probing.id: 1, half_full.id: 2, other.id: 4}
    finally:
        await store.close()


async def test_events_waiting_behind_a_retry_are_not_due_so_claims_skip_them(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "due.db")
    try:
        now = format_time(START)
        retry_at = format_time(START + dt.timedelta(seconds=300))
        lease = format_time(START + dt.timedelta(seconds=60))
        failing, healthy = await stored_customers(store, "failing", "healthy")
        message = a_message(failing)
        async with store.transaction() as tx:
            await tx.add_event("evt_created", EventType.MESSAGE_CREATED, message, b"{}", now)
        [head] = (await store.claim_due_events(now, lease, 8, 4, {})).events
        async with store.transaction() as tx:  # queued while the first is in flight
            await tx.add_event("evt_sent", EventType.MESSAGE_UPDATED, message, b"{}", now)
        attempt = Attempt(head.seq, 1, "scheduled", now, "u", 503, 1.0, "HTTP 503", "")
        await store.finish_attempt(attempt, head.requeues, "pending", retry_at)
        async with store.transaction() as tx:  # a later event of the same message, and another
            await tx.add_event("evt_updated", EventType.MESSAGE_UPDATED, message, b"{}", now)
            other = a_message(healthy)
            await tx.add_event("evt_other", EventType.MESSAGE_CREATED, other, b"{}", now)
        async with store.reading() as tx:
            rows = await tx.all(
                "SELECT event_id, next_attempt_at FROM outbox WHERE message_id = ? ORDER BY seq",
                (message.id,),
            )
        # Queued before the failure or after it, the later events are due with the retry.
        assert [(r["event_id"], r["next_attempt_at"]) for r in rows] == [
            ("evt_created", retry_at),
            ("evt_sent", retry_at),
            ("evt_updated", retry_at),
        ]
        # Only the healthy customer's event may go now; the failing one's wait for 300 s.
        assert [
            e.event_id for e in (await store.claim_due_events(now, lease, 1, 4, {})).events
        ] == ["evt_other"]
        assert (await store.claim_due_events(now, lease, 8, 4, {})).events == []
        later_on = format_time(START + dt.timedelta(seconds=301))
        lease = format_time(START + dt.timedelta(seconds=400))
        claimed = (await store.claim_due_events(later_on, lease, 8, 4, {})).events
        # In order: the retry first, then (once it is done) the update. (evt_other's lease ran out
        # unfinished, so it is due again too.)
        assert [e.event_id for e in claimed if e.customer_id == failing.id] == ["evt_created"]
    finally:
        await store.close()
