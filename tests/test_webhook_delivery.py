"""Customer webhook delivery, driven by hand: body, signatures, retries, order, guard, restart."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from standardwebhooks.webhooks import Webhook

from gateway.clock import NEVER, ManualClock, format_time
from gateway.signing import verify_standard_webhook
from tests.conftest import (
    CustomerEndpoint,
    GatewayServer,
    Received,
    ServedApp,
    ServerFactory,
    Tenant,
    eventually,
    free_socket,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
START_S = int(START.timestamp())
WEBHOOK_ID = re.compile(r"^msg_[0-9a-f]{32}$")
SOURCE = "+15550000001"
DESTINATION = "+15550000002"


# Helpers ----------------------------------------------------------------------------------------


async def target_status(server: GatewayServer, message_id: str) -> str:
    message = await server.gateway.store.get_message(message_id)
    assert message is not None
    return message.targets[0].status.value


async def dispatch_and_settle(server: GatewayServer, message_id: str) -> None:
    """Submit the queued target (-> sent) and wait for the sandbox's report (-> delivered)."""
    assert await server.gateway.dispatcher.run_once() == 1

    async def reported() -> bool:
        await server.settled()  # the sandbox's report came from outside the test client
        return await target_status(server, message_id) == "delivered"

    await eventually(reported)


async def send(server: GatewayServer, tenant: Tenant, text: str = "hello") -> dict[str, Any]:
    response = await server.send(tenant, [DESTINATION], text)
    assert response.status_code == 200, response.text
    message: dict[str, Any] = response.json()
    return message


async def event_ids(server: GatewayServer, message_id: str) -> list[str]:
    async with server.gateway.store.reading() as tx:
        rows = await tx.all(
            "SELECT event_id FROM outbox WHERE message_id = ? ORDER BY seq", (message_id,)
        )
    return [str(row["event_id"]) for row in rows]


def kinds(received: list[Received]) -> list[tuple[str, str]]:
    """(type, message id) of each received webhook, in arrival order."""
    return [(r.json()["type"], r.json()["data"]["id"]) for r in received]


def voipbin_hmac(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_webhook_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Computed here from the spec, independently of gateway.signing."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


async def manual_gateway(
    start_gateway: ServerFactory, endpoint: CustomerEndpoint, **sections: dict[str, Any]
) -> tuple[GatewayServer, ManualClock, Tenant]:
    clock = ManualClock(START)
    server = await start_gateway(clock=clock, run_workers=False, **sections)
    tenant = await server.add_tenant(SOURCE, webhook_uri=endpoint.url)
    return server, clock, tenant


# Body and headers --------------------------------------------------------------------------------


async def test_body_and_signatures_verify_with_the_official_library(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start_gateway(run_workers=False)  # system clock: the official lib checks it
    tenant = await server.add_tenant(SOURCE, webhook_uri=customer_endpoint.url)
    message = await send(server, tenant, "hello, this is test.")

    assert await server.gateway.deliverer.run_once() == 1
    assert len(customer_endpoint.received) == 1
    request = customer_endpoint.received[0]
    assert request.method == "POST"
    assert request.path == "/hook"
    body = request.json()
    assert list(body) == ["type", "data"]
    assert body == {"type": "message_created", "data": message}

    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["host"] == urlsplit(customer_endpoint.url).netloc
    secret = tenant.customer.webhook_secret
    assert headers["x-voipbin-signature"] == voipbin_hmac(secret, request.body)
    assert WEBHOOK_ID.match(headers["webhook-id"])
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"] == standard_webhook_signature(
        secret, headers["webhook-id"], headers["webhook-timestamp"], request.body
    )
    assert Webhook(secret).verify(request.body, headers) == body

    attempts = await server.gateway.store.list_attempts(headers["webhook-id"])
    assert [(a.attempt_number, a.status_code, a.error) for a in attempts] == [(1, 200, "")]
    assert attempts[0].url == customer_endpoint.url
    assert attempts[0].response_excerpt == "ok"
    assert await server.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "delivered", 1)
    ]
    assert await server.gateway.deliverer.run_once() == 0
    assert len(customer_endpoint.received) == 1


@pytest.mark.parametrize("method", ["PUT", "GET"])
async def test_the_customers_webhook_method_is_used(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint, method: str
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(SOURCE, customer_endpoint.url, webhook_method=method)
    message = await send(server, tenant)

    assert await server.gateway.deliverer.run_once() == 1
    [request] = customer_endpoint.received
    assert request.method == method
    assert request.json() == {"type": "message_created", "data": message}
    assert request.headers["content-type"] == "application/json"
    secret = tenant.customer.webhook_secret
    assert request.headers["x-voipbin-signature"] == voipbin_hmac(secret, request.body)
    assert Webhook(secret).verify(request.body, request.headers) == request.json()


# Retries -----------------------------------------------------------------------------------------


async def test_failed_attempts_are_retried_on_the_schedule_with_one_webhook_id(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_gateway(start_gateway, customer_endpoint)
    deliverer = server.gateway.deliverer
    customer_endpoint.statuses = [500, 500]
    message = await send(server, tenant)

    assert await deliverer.run_once() == 1  # attempt 1: 500
    assert len(customer_endpoint.received) == 1
    assert await deliverer.run_once() == 0
    clock.advance(4.999)
    assert await deliverer.run_once() == 0  # not before 5 s
    clock.advance(0.001)
    assert await deliverer.run_once() == 1  # attempt 2: 500
    assert len(customer_endpoint.received) == 2
    clock.advance(299.999)
    assert await deliverer.run_once() == 0  # not before another 300 s
    clock.advance(0.001)
    assert await deliverer.run_once() == 1  # attempt 3: 200
    assert await deliverer.run_once() == 0
    clock.advance(86400)
    assert await deliverer.run_once() == 0  # delivered: never again

    received = customer_endpoint.received
    assert len(received) == 3
    ids = {r.headers["webhook-id"] for r in received}
    assert len(ids) == 1
    [event_id] = ids
    assert [r.headers["webhook-timestamp"] for r in received] == [
        str(START_S),
        str(START_S + 5),
        str(START_S + 305),
    ]
    assert len({r.headers["webhook-signature"] for r in received}) == 3  # re-signed each time
    assert len({r.body for r in received}) == 1  # the same bytes every time
    secret = tenant.customer.webhook_secret
    for r in received:
        timestamp = r.headers["webhook-timestamp"]
        verify_standard_webhook(
            secret, event_id, timestamp, r.headers["webhook-signature"], r.body, int(timestamp)
        )
        assert r.headers["x-voipbin-signature"] == voipbin_hmac(secret, r.body)

    attempts = await server.gateway.store.list_attempts(event_id)
    assert [a.attempt_number for a in attempts] == [1, 2, 3]
    assert [a.status_code for a in attempts] == [500, 500, 200]
    assert [a.error for a in attempts] == ["HTTP 500", "HTTP 500", ""]
    assert [a.trigger for a in attempts] == ["scheduled"] * 3
    assert [a.tm_attempt for a in attempts] == [
        format_time(START),
        format_time(START + dt.timedelta(seconds=5)),
        format_time(START + dt.timedelta(seconds=305)),
    ]
    assert await server.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "delivered", 3)
    ]


async def test_exhausted_event_ends_failed_and_the_next_event_goes_out(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_gateway(
        start_gateway, customer_endpoint, webhooks={"retry_schedule_s": [1, 1]}
    )
    deliverer = server.gateway.deliverer
    store = server.gateway.store
    customer_endpoint.statuses = [500] * 3
    message = await send(server, tenant)
    await dispatch_and_settle(server, message["id"])  # queues message_updated (sent, delivered)

    assert await deliverer.run_once() == 1  # attempt 1
    clock.advance(1)
    assert await deliverer.run_once() == 1  # attempt 2
    clock.advance(1)
    assert await deliverer.run_once() == 1  # attempt 3: the schedule [1, 1] is used up
    assert kinds(customer_endpoint.received) == [("message_created", message["id"])] * 3
    assert await store.outbox_states(message["id"]) == [
        ("message_created", "failed", 3),
        ("message_updated", "pending", 0),
        ("message_updated", "pending", 0),
    ]
    event_id = customer_endpoint.received[0].headers["webhook-id"]
    attempts = await store.list_attempts(event_id)
    assert [(a.attempt_number, a.status_code) for a in attempts] == [(1, 500), (2, 500), (3, 500)]

    clock.advance(3600)
    assert await deliverer.run_once() == 1  # the failed event is not tried again; the next is
    assert await deliverer.run_once() == 1
    assert await deliverer.run_once() == 0
    received = customer_endpoint.received
    assert kinds(received[3:]) == [("message_updated", message["id"])] * 2
    assert [r.json()["data"]["targets"][0]["status"] for r in received[3:]] == [
        "sent",
        "delivered",
    ]
    assert await store.outbox_states(message["id"]) == [
        ("message_created", "failed", 3),
        ("message_updated", "delivered", 1),
        ("message_updated", "delivered", 1),
    ]


# Order -------------------------------------------------------------------------------------------


async def test_events_of_one_message_wait_for_its_failing_event_but_others_do_not(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_gateway(start_gateway, customer_endpoint)
    deliverer = server.gateway.deliverer
    store = server.gateway.store
    customer_endpoint.statuses = [503]
    first = await send(server, tenant, "first")

    assert await deliverer.run_once() == 1  # message_created answered 503
    await dispatch_and_settle(server, first["id"])  # two message_updated queued behind it
    assert await store.outbox_states(first["id"]) == [
        ("message_created", "pending", 1),
        ("message_updated", "pending", 0),
        ("message_updated", "pending", 0),
    ]
    assert await deliverer.run_once() == 0  # the updates are due but wait for the created
    assert kinds(customer_endpoint.received) == [("message_created", first["id"])]

    second = await send(server, tenant, "second")
    assert await deliverer.run_once() == 1  # another message is not held back
    assert kinds(customer_endpoint.received)[1:] == [("message_created", second["id"])]
    assert await store.outbox_states(first["id"]) == [
        ("message_created", "pending", 1),
        ("message_updated", "pending", 0),
        ("message_updated", "pending", 0),
    ]

    clock.advance(5)
    assert await deliverer.run_once() == 1  # the created, retried, succeeds
    assert await deliverer.run_once() == 1  # then the updates follow, one at a time, in order
    assert await deliverer.run_once() == 1
    assert await deliverer.run_once() == 0
    received = customer_endpoint.received
    assert kinds(received[2:]) == [
        ("message_created", first["id"]),
        ("message_updated", first["id"]),
        ("message_updated", first["id"]),
    ]
    assert [r.json()["data"]["targets"][0]["status"] for r in received[2:]] == [
        "queued",
        "sent",
        "delivered",
    ]
    assert received[2].headers["webhook-id"] == received[0].headers["webhook-id"]
    assert await store.outbox_states(first["id"]) == [
        ("message_created", "delivered", 2),
        ("message_updated", "delivered", 1),
        ("message_updated", "delivered", 1),
    ]


# Redirects and blocked addresses ------------------------------------------------------------------


def with_location(endpoint: CustomerEndpoint, location: str) -> Callable[..., Awaitable[None]]:
    """The endpoint's ASGI app, with a Location header added to every answer."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def send_with_location(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message["headers"], (b"location", location.encode())]
                message = {**message, "headers": headers}
            await send(message)

        await endpoint(scope, receive, send_with_location)

    return app


@pytest.fixture
async def redirecting_endpoint(
    customer_endpoint: CustomerEndpoint,
) -> AsyncIterator[CustomerEndpoint]:
    """An endpoint whose answers carry `Location: <customer_endpoint.url>`."""
    endpoint = CustomerEndpoint()
    endpoint.served = ServedApp(with_location(endpoint, customer_endpoint.url), free_socket())
    await endpoint.served.start()
    yield endpoint
    await endpoint.served.stop()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_a_failure_and_is_not_followed(
    start_gateway: ServerFactory,
    customer_endpoint: CustomerEndpoint,
    redirecting_endpoint: CustomerEndpoint,
    status: int,
) -> None:
    server, clock, tenant = await manual_gateway(start_gateway, redirecting_endpoint)
    redirecting_endpoint.statuses = [status]
    message = await send(server, tenant)

    assert await server.gateway.deliverer.run_once() == 1
    assert len(redirecting_endpoint.received) == 1
    assert customer_endpoint.received == []  # the Location was not followed
    event_id = redirecting_endpoint.received[0].headers["webhook-id"]
    attempts = await server.gateway.store.list_attempts(event_id)
    assert [(a.status_code, a.error) for a in attempts] == [(status, f"HTTP {status}")]
    assert await server.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "pending", 1)
    ]
    clock.advance(5)
    assert await server.gateway.deliverer.run_once() == 1  # retried, now answered 200
    assert len(redirecting_endpoint.received) == 2
    assert customer_endpoint.received == []
    assert await server.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "delivered", 2)
    ]


async def test_a_blocked_webhook_address_is_never_contacted(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_gateway(
        start_gateway, customer_endpoint, webhooks={"allowed_networks": []}
    )
    message = await send(server, tenant)

    assert await server.gateway.deliverer.run_once() == 1
    clock.advance(5)
    assert await server.gateway.deliverer.run_once() == 1
    assert customer_endpoint.received == []
    assert await server.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "pending", 2)
    ]
    [event_id] = await event_ids(server, message["id"])  # never on the wire: read the outbox
    attempts = await server.gateway.store.list_attempts(event_id)
    assert [(a.attempt_number, a.status_code) for a in attempts] == [(1, 0), (2, 0)]
    for attempt in attempts:
        assert attempt.error.startswith("blocked: ")
        assert "127.0.0.1 is in 127.0.0.0/8 (loopback)" in attempt.error
        assert attempt.url == customer_endpoint.url


# Durability and deletes ---------------------------------------------------------------------------


async def test_pending_events_survive_a_restart(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint, tmp_path: Path
) -> None:
    db_path = tmp_path / "durable.db"
    first = await start_gateway(run_workers=False, db_path=db_path)
    tenant = await first.add_tenant(SOURCE, webhook_uri=customer_endpoint.url)
    message = await send(first, tenant)
    assert await first.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "pending", 0)
    ]
    await first.stop()
    assert customer_endpoint.received == []

    second = await start_gateway(run_workers=True, db_path=db_path)
    received = await customer_endpoint.wait_for(1)
    assert received[0].json() == {"type": "message_created", "data": message}
    secret = tenant.customer.webhook_secret
    assert Webhook(secret).verify(received[0].body, received[0].headers) == received[0].json()

    async def created_delivered() -> bool:
        states = await second.gateway.store.outbox_states(message["id"])
        return states[0] == ("message_created", "delivered", 1)

    await eventually(created_delivered)


async def test_a_deleted_message_sends_message_deleted_and_then_nothing(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, _clock, tenant = await manual_gateway(start_gateway, customer_endpoint)
    deliverer = server.gateway.deliverer
    message = await send(server, tenant)
    assert await deliverer.run_once() == 1

    response = await server.client.delete(
        f"/v1.0/messages/{message['id']}", params={"token": tenant.token}
    )
    assert response.status_code == 200
    deleted = response.json()
    assert deleted["tm_delete"] != NEVER
    assert await deliverer.run_once() == 1
    assert [r.json() for r in customer_endpoint.received] == [
        {"type": "message_created", "data": message},
        {"type": "message_deleted", "data": deleted},
    ]

    await dispatch_and_settle(server, message["id"])  # the carrier still sends and reports
    stored = await server.gateway.store.get_message(message["id"])
    assert stored is not None
    assert stored.targets[0].status.value == "delivered"
    assert stored.tm_delete == deleted["tm_delete"]
    assert await deliverer.run_once() == 0
    assert len(customer_endpoint.received) == 2
    assert await server.gateway.store.outbox_states(message["id"]) == [
        ("message_created", "delivered", 1),
        ("message_deleted", "delivered", 1),
    ]


# Timeouts ----------------------------------------------------------------------------------------


async def trickle(scope: Any, receive: Any, send: Any) -> None:
    """Answers 200 at once, then one body byte every 0.2 s: each read is quick, the whole is not."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(10):
        await send({"type": "http.response.body", "body": b".", "more_body": True})
        await asyncio.sleep(0.2)
    await send({"type": "http.response.body", "body": b""})


async def test_the_timeout_bounds_the_whole_exchange_not_each_read(
    start_gateway: ServerFactory,
) -> None:
    slow = ServedApp(trickle, free_socket())
    await slow.start()
    try:
        clock = ManualClock(START)
        server = await start_gateway(clock=clock, run_workers=False, webhooks={"timeout_s": 0.5})
        tenant = await server.add_tenant(SOURCE, webhook_uri=slow.url + "/hook")
        message = await send(server, tenant)
        started = time.perf_counter()
        assert await server.gateway.deliverer.run_once() == 1
        assert time.perf_counter() - started < 1.5  # not the 2 s the body takes
        [event_id] = await event_ids(server, message["id"])
        [attempt] = await server.gateway.store.list_attempts(event_id)
        assert attempt.error == "timeout"
        assert await server.gateway.store.outbox_states(message["id"]) == [
            ("message_created", "pending", 1)
        ]
    finally:
        await slow.stop()
