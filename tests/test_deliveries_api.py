"""The delivery log and replay API over real HTTP: list, filter, get with attempts, resend.

The worker is stepped by hand (`deliverer.run_once()`) on a manual clock against a real customer
endpoint on 127.0.0.1; only the wakeup test runs the worker in the background.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import httpx
import pytest

from gateway.clock import ManualClock, format_time
from tests.conftest import CustomerEndpoint, GatewayServer, ServerFactory, Tenant, eventually
from tests.test_api_messages import assert_error

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SOURCE = "+15550000001"
OTHER_SOURCE = "+15550000009"
DESTINATION = "+15550000002"
DELIVERY_ID = re.compile(r"^msg_[0-9a-f]{32}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
DELIVERY_KEYS = [
    "id", "message_id", "type", "state", "attempt_count", "next_attempt_at", "last_error",
    "tm_create", "tm_update",
]  # fmt: skip
ATTEMPT_KEYS = [
    "attempt_number", "trigger", "tm_attempt", "url", "status_code", "duration_ms",
    "error_class", "error", "response_excerpt",
]  # fmt: skip
# One retry, so a delivery fails for good after two attempts; retries are jittered, so tests
# move the clock well past each delay instead of onto it.
# Retries spent fast on purpose: the circuit breaker would pause them (test_breaker.py tests it).
ONE_RETRY = {"retry_schedule_s": [1], "breaker_failures": 0}
PAST_ANY_RETRY_S = 30.0


# Helpers ----------------------------------------------------------------------------------------


async def manual_server(
    start_gateway: ServerFactory, endpoint: CustomerEndpoint, **webhooks: Any
) -> tuple[GatewayServer, ManualClock, Tenant]:
    clock = ManualClock(START)
    webhooks = {"breaker_failures": 0, **webhooks}  # as in ONE_RETRY
    server = await start_gateway(clock=clock, run_workers=False, webhooks=webhooks)
    tenant = await server.add_tenant(SOURCE, webhook_uri=endpoint.url)
    return server, clock, tenant


async def send(server: GatewayServer, tenant: Tenant, text: str = "hello") -> str:
    response = await server.send(tenant, [DESTINATION], text)
    assert response.status_code == 200, response.text
    message_id: str = response.json()["id"]
    return message_id


async def drain(server: GatewayServer) -> None:
    """Step the worker until nothing more is due now (it caps deliveries per endpoint)."""
    for _ in range(100):
        if await server.gateway.deliverer.run_once() == 0:
            return
    raise AssertionError("the worker never ran out of due deliveries")


async def states(server: GatewayServer) -> dict[str, str]:
    """event id -> state of every delivery."""
    async with server.gateway.store.reading() as tx:
        rows = await tx.all("SELECT event_id, state FROM outbox")
    return {str(row["event_id"]): str(row["state"]) for row in rows}


async def fail_everything_pending(server: GatewayServer, clock: ManualClock) -> None:
    """Attempt and retry until no delivery is pending (the endpoint must be answering 5xx)."""
    for _ in range(10):
        await drain(server)
        if "pending" not in (await states(server)).values():
            return
        clock.advance(PAST_ANY_RETRY_S)
    raise AssertionError("deliveries stayed pending")


async def api_get(server: GatewayServer, tenant: Tenant, path: str, **params: str) -> Any:
    response = await server.client.get(path, params={"token": tenant.token, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def list_all(server: GatewayServer, tenant: Tenant, **params: str) -> list[dict[str, Any]]:
    page = await api_get(server, tenant, "/v1.0/webhook_deliveries", page_size="100", **params)
    assert page["next_page_token"] == ""
    result: list[dict[str, Any]] = page["result"]
    return result


async def resend(server: GatewayServer, tenant: Tenant, delivery_id: str) -> httpx.Response:
    return await server.client.post(
        f"/v1.0/webhook_deliveries/{delivery_id}/resend", params={"token": tenant.token}
    )


# List ---------------------------------------------------------------------------------------------


async def test_pages_list_every_delivery_newest_first_without_skips_or_repeats(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_server(start_gateway, customer_endpoint)
    sent = []
    for i in range(25):
        sent.append(await send(server, tenant, f"m{i}"))
        if i % 4 == 3:
            clock.advance(0.001)  # groups of four share a tm_create: the id breaks the tie

    seen: list[dict[str, Any]] = []
    token, pages = "", []
    while True:
        params = {"token": tenant.token, "page_size": "7", "page_token": token}
        response = await server.client.get("/v1.0/webhook_deliveries", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert list(page) == ["result", "next_page_token"]
        pages.append(len(page["result"]))
        seen += page["result"]
        token = page["next_page_token"]
        if not token:
            break
    assert pages == [7, 7, 7, 4]
    assert len({d["id"] for d in seen}) == 25
    assert sorted(d["message_id"] for d in seen) == sorted(sent)
    keys = [(d["tm_create"], d["id"]) for d in seen]
    assert keys == sorted(keys, reverse=True)
    for delivery in seen:
        assert list(delivery) == DELIVERY_KEYS
        assert DELIVERY_ID.match(delivery["id"])
        assert delivery["type"] == "message_created"
        assert (delivery["state"], delivery["attempt_count"], delivery["last_error"]) == (
            "pending",
            0,
            "",
        )
        assert delivery["next_attempt_at"] == delivery["tm_create"]  # due when queued
        assert TIME.match(delivery["tm_create"])
        assert TIME.match(delivery["tm_update"])


async def test_a_plain_tm_create_token_lists_the_deliveries_created_before_it(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_server(start_gateway, customer_endpoint)
    older = await send(server, tenant)
    clock.advance(1)
    await send(server, tenant)
    page = await api_get(
        server, tenant, "/v1.0/webhook_deliveries", page_token=format_time(clock.now())
    )
    assert [d["message_id"] for d in page["result"]] == [older]
    assert page["next_page_token"] == ""


async def test_filters_by_message_and_by_state(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_server(start_gateway, customer_endpoint, **ONE_RETRY)
    delivered = await send(server, tenant, "delivered")
    await drain(server)
    customer_endpoint.statuses = [500] * 10
    failed = await send(server, tenant, "failed")
    await fail_everything_pending(server, clock)
    pending = await send(server, tenant, "pending")
    clock.advance(1)
    deleted = await server.client.delete(
        f"/v1.0/messages/{delivered}", params={"token": tenant.token}
    )
    assert deleted.status_code == 200  # queues message_deleted for the delivered message

    def summary(found: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        return [(d["message_id"], d["type"], d["state"]) for d in found]

    assert summary(await list_all(server, tenant, state="delivered")) == [
        (delivered, "message_created", "delivered")
    ]
    assert summary(await list_all(server, tenant, state="failed")) == [
        (failed, "message_created", "failed")
    ]
    assert summary(await list_all(server, tenant, state="pending")) == [
        (delivered, "message_deleted", "pending"),
        (pending, "message_created", "pending"),
    ]
    assert summary(await list_all(server, tenant, message_id=delivered)) == [
        (delivered, "message_deleted", "pending"),
        (delivered, "message_created", "delivered"),
    ]
    assert summary(await list_all(server, tenant, message_id=delivered, state="delivered")) == [
        (delivered, "message_created", "delivered")
    ]
    assert await list_all(server, tenant, message_id=str(uuid.uuid4())) == []
    assert len(await list_all(server, tenant)) == 4


# Get ----------------------------------------------------------------------------------------------


async def test_get_shows_every_attempt_oldest_first(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    clock = ManualClock(START)
    server = await start_gateway(clock=clock, run_workers=False)
    # The query often holds a credential: the attempt log must not keep it.
    tenant = await server.add_tenant(SOURCE, webhook_uri=customer_endpoint.url + "?key=s3cret")
    customer_endpoint.statuses = [500, 503]
    message_id = await send(server, tenant)
    await drain(server)
    [listed] = await list_all(server, tenant)
    delivery_id = listed["id"]
    path = f"/v1.0/webhook_deliveries/{delivery_id}"

    retrying = await api_get(server, tenant, path)
    assert (retrying["state"], retrying["attempt_count"]) == ("pending", 1)
    assert retrying["next_attempt_at"] > retrying["tm_update"]  # the retry is scheduled
    assert retrying["last_error"]
    clock.advance(10)  # past the first retry (5 s +- jitter)
    await drain(server)
    clock.advance(400)  # past the second (300 s +- jitter)
    await drain(server)

    detail = await api_get(server, tenant, path)
    assert list(detail) == [*DELIVERY_KEYS, "attempts"]
    assert detail["id"] == delivery_id
    assert detail["message_id"] == message_id
    assert (detail["state"], detail["attempt_count"]) == ("delivered", 3)
    assert (detail["next_attempt_at"], detail["last_error"]) == ("", "")
    attempts = detail["attempts"]
    for attempt in attempts:
        assert list(attempt) == ATTEMPT_KEYS
        assert attempt["url"] == customer_endpoint.url
        assert attempt["trigger"] == "scheduled"
        assert attempt["response_excerpt"] == "ok"
        assert isinstance(attempt["duration_ms"], float)
        assert attempt["duration_ms"] >= 0
    assert [a["attempt_number"] for a in attempts] == [1, 2, 3]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert [a["error_class"] for a in attempts] == ["http_5xx", "http_5xx", ""]
    assert [bool(a["error"]) for a in attempts] == [True, True, False]
    times = [a["tm_attempt"] for a in attempts]
    assert times[0] == format_time(START)
    assert times == sorted(times)
    assert len(set(times)) == 3
    ids = {r.headers["webhook-id"] for r in customer_endpoint.received}
    assert ids == {delivery_id}


# Resend -------------------------------------------------------------------------------------------


async def test_resend_sends_a_failed_delivery_again_with_the_same_webhook_id(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, clock, tenant = await manual_server(start_gateway, customer_endpoint, **ONE_RETRY)
    customer_endpoint.statuses = [500] * 10
    await send(server, tenant)
    await fail_everything_pending(server, clock)
    [failed] = await list_all(server, tenant)
    assert (failed["state"], failed["attempt_count"]) == ("failed", 2)
    assert failed["next_attempt_at"] == ""
    clock.advance(60)

    response = await resend(server, tenant, failed["id"])
    assert response.status_code == 200, response.text
    resent = response.json()
    assert list(resent) == DELIVERY_KEYS
    kept = ["id", "message_id", "type", "attempt_count", "last_error", "tm_create"]
    assert {key: resent[key] for key in kept} == {key: failed[key] for key in kept}
    assert resent["state"] == "pending"
    assert resent["next_attempt_at"] == format_time(clock.now())
    assert resent["tm_update"] == format_time(clock.now())

    customer_endpoint.statuses.clear()  # the endpoint is fixed: it answers 200
    await drain(server)
    received = customer_endpoint.received
    assert len(received) == 3
    assert {r.headers["webhook-id"] for r in received} == {failed["id"]}
    assert received[2].body == received[0].body
    detail = await api_get(server, tenant, f"/v1.0/webhook_deliveries/{failed['id']}")
    assert (detail["state"], detail["attempt_count"]) == ("delivered", 3)
    assert [(a["trigger"], a["status_code"]) for a in detail["attempts"]] == [
        ("scheduled", 500),
        ("scheduled", 500),
        ("manual", 200),
    ]
    assert detail["attempts"][2]["tm_attempt"] == format_time(clock.now())


async def test_resend_wakes_a_running_worker(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    # A poll far longer than the test: only the wakeup can make the resend go out in time.
    server = await start_gateway(webhooks={"poll_interval_s": 600})
    tenant = await server.add_tenant(SOURCE, webhook_uri=customer_endpoint.url)
    await send(server, tenant)

    async def settled() -> bool:  # created, then sent and delivered from the sandbox carrier
        found = await states(server)
        return len(found) == 3 and set(found.values()) == {"delivered"}

    await eventually(settled)
    first = customer_endpoint.received[0]
    delivery_id = first.headers["webhook-id"]
    response = await resend(server, tenant, delivery_id)
    assert response.status_code == 200, response.text
    received = await customer_endpoint.wait_for(4, timeout_s=5)
    assert received[3].headers["webhook-id"] == delivery_id
    assert received[3].body == first.body


# Isolation and errors -----------------------------------------------------------------------------


async def test_another_customers_delivery_is_not_found_and_not_resent(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server, _clock, tenant = await manual_server(start_gateway, customer_endpoint)
    other = await server.add_tenant(OTHER_SOURCE, webhook_uri=customer_endpoint.url)
    await send(server, tenant)
    await drain(server)
    [delivery] = await list_all(server, tenant)

    assert await list_all(server, other) == []
    assert await list_all(server, other, message_id=delivery["message_id"]) == []
    path = f"/v1.0/webhook_deliveries/{delivery['id']}"
    response = await server.client.get(path, params={"token": other.token})
    assert_error(response, 404, "NOT_FOUND", "DELIVERY_NOT_FOUND")
    assert_error(
        await resend(server, other, delivery["id"]), 404, "NOT_FOUND", "DELIVERY_NOT_FOUND"
    )
    detail = await api_get(server, tenant, path)  # the owner's view is unchanged
    assert {key: detail[key] for key in DELIVERY_KEYS} == delivery
    assert (await states(server)) == {delivery["id"]: "delivered"}
    unknown = f"msg_{uuid.uuid4().hex}"
    response = await server.client.get(
        f"/v1.0/webhook_deliveries/{unknown}", params={"token": tenant.token}
    )
    assert_error(response, 404, "NOT_FOUND", "DELIVERY_NOT_FOUND")
    assert_error(await resend(server, tenant, unknown), 404, "NOT_FOUND", "DELIVERY_NOT_FOUND")


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": "0"},
        {"page_size": "ten"},
        {"page_size": ""},
        {"state": "lost"},
        {"state": ""},
        {"message_id": "not-a-uuid"},
        {"page_token": "yesterday"},
        {"page_token": "2026-01-01 00:00:00.000000|not-an-id"},
    ],
)
async def test_bad_query_parameters_are_400(
    start_gateway: ServerFactory, params: dict[str, str]
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(SOURCE)
    response = await server.client.get(
        "/v1.0/webhook_deliveries", params={"token": tenant.token, **params}
    )
    assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_REQUEST_PARAMETER")


@pytest.mark.parametrize("bad_id", ["nope", str(uuid.uuid4()), f"msg_{'A' * 32}", "msg_123"])
async def test_a_malformed_delivery_id_is_400(start_gateway: ServerFactory, bad_id: str) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(SOURCE)
    response = await server.client.get(
        f"/v1.0/webhook_deliveries/{bad_id}", params={"token": tenant.token}
    )
    assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_ID")
    assert_error(await resend(server, tenant, bad_id), 400, "INVALID_ARGUMENT", "INVALID_ID")


async def test_the_delivery_api_needs_credentials(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    delivery_id = f"msg_{uuid.uuid4().hex}"
    for response in (
        await server.client.get("/v1.0/webhook_deliveries"),
        await server.client.get(f"/v1.0/webhook_deliveries/{delivery_id}"),
        await server.client.post(f"/v1.0/webhook_deliveries/{delivery_id}/resend"),
    ):
        assert_error(response, 401, "UNAUTHENTICATED", "AUTHENTICATION_REQUIRED")
    response = await server.client.get("/v1.0/webhook_deliveries", params={"token": "x.y.z"})
    assert_error(response, 401, "UNAUTHENTICATED", "INVALID_CREDENTIALS")


async def test_the_openapi_document_describes_the_delivery_api(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    spec = (await server.client.get("/openapi.json")).json()
    paths, schemas = spec["paths"], spec["components"]["schemas"]
    assert "get" in paths["/v1.0/webhook_deliveries"]
    assert "get" in paths["/v1.0/webhook_deliveries/{id}"]
    assert "post" in paths["/v1.0/webhook_deliveries/{id}/resend"]
    assert list(schemas["Delivery"]["properties"]) == DELIVERY_KEYS
    assert list(schemas["DeliveryDetail"]["properties"]) == [*DELIVERY_KEYS, "attempts"]
    assert list(schemas["DeliveryAttempt"]["properties"]) == ATTEMPT_KEYS
    assert list(schemas["DeliveryPage"]["properties"]) == ["result", "next_page_token"]
