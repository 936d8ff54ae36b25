"""The sandbox carrier end to end: dispatch, reports, inbound SMS, forged and repeated callbacks."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.carriers.base import DeliveryReport, SendResult
from gateway.carriers.sandbox import SIGNATURE_HEADER, InboundEvent, StatusEvent, signed_callback
from gateway.clock import ManualClock
from gateway.models import Message, TargetStatus
from gateway.store import DispatchJob
from tests.conftest import (
    SANDBOX_SECRET,
    CustomerEndpoint,
    GatewayServer,
    ServerFactory,
    event_kinds,
    eventually,
    free_socket,
)
from tests.test_api_messages import assert_error


async def stored(server: GatewayServer, message_id: str) -> Message:
    message = await server.gateway.store.get_message(message_id)
    assert message is not None
    return message


async def post_callback(
    server: GatewayServer,
    event: InboundEvent | StatusEvent,
    *,
    secret: str = SANDBOX_SECRET,
    now_s: float | None = None,
) -> httpx.Response:
    now_s = server.clock.now().timestamp() if now_s is None else now_s
    body, signature = signed_callback(secret, event, now_s)
    headers = {SIGNATURE_HEADER: signature, "content-type": "application/json"}
    return await server.client.post("/hooks/sandbox", content=body, headers=headers)


def inbound(to: str, text: str = "hi", event_id: str = "sbx_in_1") -> InboundEvent:
    return InboundEvent(id=event_id, from_="+15557770000", to=to, text=text)


async def all_messages(server: GatewayServer, customer_id: str) -> list[Message]:
    return await server.gateway.store.list_messages(customer_id, 1000, None)


# Outbound round trip ---------------------------------------------------------------------------


async def test_sandbox_round_trip_sent_then_delivered_or_failed(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start_gateway()
    tenant = await server.add_tenant("+15550000001", webhook_uri=customer_endpoint.url)
    response = await server.send(tenant, ["+15550000002", "+15005550001"], "round trip")
    message_id = response.json()["id"]

    async def final() -> bool:
        message = await stored(server, message_id)
        return [t.status for t in message.targets] == [TargetStatus.DELIVERED, TargetStatus.FAILED]

    await eventually(final)
    message = await stored(server, message_id)
    assert message.targets[1].error_code == "30003"
    assert message.targets[0].carrier_status == "delivered"
    # created, two `sent` updates, two final updates: five events, in order.
    received = await customer_endpoint.wait_for(5)
    kinds = [r.json()["type"] for r in received]
    assert kinds == ["message_created"] + ["message_updated"] * 4
    ladders = [[t["status"] for t in r.json()["data"]["targets"]] for r in received]
    assert ladders[0] == ["queued", "queued"]
    assert ladders[-1] == ["delivered", "failed"]
    rank = {"queued": 0, "sent": 1, "delivered": 2, "failed": 2}
    for before, after in itertools.pairwise(ladders):
        assert all(rank[a] >= rank[b] for a, b in zip(after, before, strict=True))


async def test_send_survives_a_stop_before_dispatch(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    db_path = tmp_path / "durable.db"
    first = await start_gateway(run_workers=False, db_path=db_path)
    tenant = await first.add_tenant("+15550000001")
    message_id = (await first.send(tenant, ["+15550000002"])).json()["id"]
    await first.stop()  # the API answered; no carrier was called
    second = await start_gateway(db_path=db_path)

    async def delivered() -> bool:
        message = await stored(second, message_id)
        return message.targets[0].status is TargetStatus.DELIVERED

    await eventually(delivered)


async def test_unreachable_carrier_ends_in_gw_timeout(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint, manual_clock: ManualClock
) -> None:
    closed = free_socket()  # bound, never listening: connections are refused
    server = await start_gateway(
        clock=manual_clock,
        run_workers=False,
        sandbox={"base_url": f"http://127.0.0.1:{closed.getsockname()[1]}"},
        dispatch={"send_deadline_s": 30, "retry_delays_s": [5]},
    )
    tenant = await server.add_tenant("+15550000001", webhook_uri=customer_endpoint.url)
    message_id = (await server.send(tenant, ["+15550000002"])).json()["id"]
    assert await server.gateway.dispatcher.run_once() == 1
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.QUEUED
    assert await server.gateway.dispatcher.run_once() == 0  # the retry waits 5 s
    manual_clock.advance(5)
    assert await server.gateway.dispatcher.run_once() == 1
    manual_clock.advance(30)
    assert await server.gateway.dispatcher.run_once() == 1
    message = await stored(server, message_id)
    assert message.targets[0].status is TargetStatus.GW_TIMEOUT
    assert await server.gateway.store.outbox_states(message_id) == [
        ("message_created", "pending", 0),
        ("message_updated", "pending", 0),
    ]
    closed.close()


async def test_carrier_refusal_marks_the_target_failed(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    customer_endpoint.statuses = [400]  # the fake carrier API refuses the submission
    carrier_url = customer_endpoint.url.removesuffix("/hook")
    server = await start_gateway(run_workers=False, sandbox={"base_url": carrier_url})
    tenant = await server.add_tenant("+15550000001")
    message_id = (await server.send(tenant, ["+15550000002"], "refused")).json()["id"]
    await server.gateway.dispatcher.run_once()
    target = (await stored(server, message_id)).targets[0]
    assert target.status is TargetStatus.FAILED
    assert target.error_code == "400"
    submission = customer_endpoint.received[0]
    assert submission.path == "/sandbox/v1/messages"
    assert submission.headers["authorization"] == f"Bearer {SANDBOX_SECRET}"
    assert submission.json() == {
        "from": "+15550000001",
        "to": "+15550000002",
        "text": "refused",
        "status_callback": f"{server.url}/hooks/sandbox",
        "reference": f"{message_id}:0",
    }


# Delivery reports -------------------------------------------------------------------------------


async def test_duplicate_and_backward_reports_change_nothing_twice(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start_gateway(run_workers=False, sandbox={"dlr_delay_s": 3600})
    tenant = await server.add_tenant("+15550000001", webhook_uri=customer_endpoint.url)
    message_id = (await server.send(tenant, ["+15550000002"])).json()["id"]
    await server.gateway.dispatcher.run_once()
    sent = await stored(server, message_id)
    assert sent.targets[0].status is TargetStatus.SENT
    carrier_id = await _carrier_message_id(server, message_id)
    delivered = StatusEvent(id="dlr-1", message_id=carrier_id, status="delivered")
    for _ in range(2):
        assert (await post_callback(server, delivered)).status_code == 200
    late_failure = StatusEvent(id="dlr-2", message_id=carrier_id, status="failed", error_code="1")
    assert (await post_callback(server, late_failure)).status_code == 200
    message = await stored(server, message_id)
    assert message.targets[0].status is TargetStatus.DELIVERED
    assert message.targets[0].error_code == ""
    assert await event_kinds(server, message_id) == [
        "message_created", "message_updated", "message_updated"
    ]  # fmt: skip


async def _carrier_message_id(server: GatewayServer, message_id: str) -> str:
    async with server.gateway.store.reading() as tx:
        row = await tx.one(
            "SELECT carrier_message_id FROM targets WHERE message_id = ?", (message_id,)
        )
    assert row is not None
    return str(row["carrier_message_id"])


async def test_a_report_that_overtakes_the_send_answer_is_applied_later(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    message_id = (await server.send(tenant, ["+15550000002"])).json()["id"]
    early = DeliveryReport("sbx_fast", TargetStatus.DELIVERED, "delivered")
    from gateway.carriers.base import Callback

    outcome = await server.gateway.tracker.accept_callback("sandbox", Callback("k-early", early))
    assert outcome.value == "early"
    job = DispatchJob(message_id, 0, "sandbox", tenant.number, "+15550000002", "hello", "", 0)
    await server.gateway.tracker.record_sent(job, SendResult("sbx_fast", parts=1))
    message = await stored(server, message_id)
    assert message.targets[0].status is TargetStatus.DELIVERED


# Inbound ----------------------------------------------------------------------------------------


async def test_inbound_to_an_owned_number_creates_an_inbound_message(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start_gateway()
    tenant = await server.add_tenant("+15550000001", webhook_uri=customer_endpoint.url)
    response = await post_callback(server, inbound(tenant.number, "h\u00e9llo"))
    assert response.status_code == 200
    [message] = await all_messages(server, tenant.id)
    assert message.direction.value == "inbound"
    assert message.source.target == "+15557770000"
    assert message.text == "h\u00e9llo"
    assert [(t.destination.target, t.status, t.parts) for t in message.targets] == [
        (tenant.number, TargetStatus.RECEIVED, 1)
    ]
    assert message.targets[0].carrier_status == "received"  # as stored, not only as first sent
    assert await _carrier_message_id(server, message.id) == "sbx_in_1"  # the carrier's id kept
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id
    assert event.json()["data"]["direction"] == "inbound"


async def test_inbound_to_an_unowned_number_is_kept_for_the_operator(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    response = await post_callback(server, inbound("+15559999999"))
    assert response.status_code == 200
    assert await all_messages(server, tenant.id) == []
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 1


async def test_duplicate_inbound_creates_one_message_and_one_event(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001", webhook_uri=customer_endpoint.url)
    for _ in range(3):
        assert (await post_callback(server, inbound(tenant.number))).status_code == 200
    [message] = await all_messages(server, tenant.id)
    assert await server.gateway.store.outbox_states(message.id) == [
        ("message_created", "pending", 0)
    ]


async def test_cli_injects_inbound_through_the_signed_path(
    start_gateway: ServerFactory, tmp_path: Path
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[server]\npublic_url = "{server.url}"\n'
        f'[database]\npath = "{tmp_path / "cli.db"}"\n'
        f'[carriers.sandbox]\nsecret = "{SANDBOX_SECRET}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "sandbox", "inbound", "--config", str(config),
        "--from", "+15557770000", "--to", tenant.number, "--text", "from the cli",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert b'"status":"accepted"' in stdout
    await server.settled()  # the CLI's callback came from outside the test client
    [message] = await all_messages(server, tenant.id)
    assert message.text == "from the cli"


# Forged, malformed, unknown ---------------------------------------------------------------------


async def test_forged_callbacks_are_403_and_store_nothing(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    wrong_key = await post_callback(server, inbound(tenant.number), secret="not-the-secret")
    stale = await post_callback(server, inbound(tenant.number), now_s=time.time() - 301)
    body, signature = signed_callback(SANDBOX_SECRET, inbound(tenant.number), time.time())
    tampered = await server.client.post(
        "/hooks/sandbox", content=body.replace(b"hi", b"ha"), headers={SIGNATURE_HEADER: signature}
    )
    unsigned = await server.client.post("/hooks/sandbox", content=body)
    garbage = await server.client.post(
        "/hooks/sandbox", content=body, headers={SIGNATURE_HEADER: "v1=abc"}
    )
    for response in (wrong_key, stale, tampered, unsigned, garbage):
        assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    assert await all_messages(server, tenant.id) == []
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    # The genuine callback is then still accepted: the forgeries consumed no idempotency key.
    assert (await post_callback(server, inbound(tenant.number))).status_code == 200
    assert len(await all_messages(server, tenant.id)) == 1


async def test_a_signature_with_a_huge_timestamp_is_403_not_500(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    forged = {SIGNATURE_HEADER: "t=" + "9" * 400 + ",v1=00"}
    response = await server.client.post("/hooks/sandbox", content=b"{}", headers=forged)
    assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")


async def test_signed_but_malformed_callback_is_400(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    body = b'{"event": "inbound", "id": 5}'
    signature = signed_callback_raw(body)
    response = await server.client.post(
        "/hooks/sandbox", content=body, headers={SIGNATURE_HEADER: signature}
    )
    assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_CALLBACK")


def signed_callback_raw(body: bytes) -> str:
    from gateway.signing import sign_sandbox

    return sign_sandbox(SANDBOX_SECRET, int(time.time()), body)


async def test_unknown_or_unconfigured_carrier_is_404(gateway_server: GatewayServer) -> None:
    for carrier in ("nope", "twilio"):
        response = await gateway_server.client.post(f"/hooks/{carrier}", content=b"{}")
        assert_error(response, 404, "NOT_FOUND", "CARRIER_NOT_FOUND")


async def test_oversized_or_wrongly_sent_callbacks_get_the_error_envelope(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    limit = server.config.server.max_body_bytes
    body, signature = signed_callback(
        SANDBOX_SECRET, inbound(tenant.number, "x" * limit), time.time()
    )
    headers = {SIGNATURE_HEADER: signature}
    declared = await server.client.post("/hooks/sandbox", content=body, headers=headers)
    assert_error(declared, 413, "INVALID_ARGUMENT", "BODY_TOO_LARGE")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    streamed = await server.client.post("/hooks/sandbox", content=chunks(), headers=headers)
    assert_error(streamed, 413, "INVALID_ARGUMENT", "BODY_TOO_LARGE")
    wrong = await server.client.put("/hooks/sandbox", content=b"{}")
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}
    assert await all_messages(server, tenant.id) == []
    assert (await post_callback(server, inbound(tenant.number))).status_code == 200


@pytest.mark.parametrize(("root_path", "path", "status"), [
    ("/api", "/api/hooks/sandbox", 200),  # served under a prefix: routed on what follows it
    ("/hooks", "/hooks/sandbox", 404),  # the prefix is not part of the route
])  # fmt: skip
async def test_callbacks_are_routed_below_the_root_path(
    start_gateway: ServerFactory, root_path: str, path: str, status: int
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    body, signature = signed_callback(SANDBOX_SECRET, inbound(tenant.number), time.time())
    transport = httpx.ASGITransport(app=server.app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        response = await client.post(path, content=body, headers={SIGNATURE_HEADER: signature})
    assert response.status_code == status, response.text
    await server.settled()
    assert len(await all_messages(server, tenant.id)) == (1 if status == 200 else 0)


async def test_sandbox_api_refuses_a_wrong_key(gateway_server: GatewayServer) -> None:
    payload: dict[str, Any] = {"from": "+15550000001", "to": "+15550000002", "text": "x"}
    response = await gateway_server.client.post(
        "/sandbox/v1/messages", json=payload, headers={"authorization": "Bearer wrong"}
    )
    assert_error(response, 401, "UNAUTHENTICATED", "INVALID_CREDENTIALS")
