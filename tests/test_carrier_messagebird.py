"""MessageBird: published JWT vectors, samples, status table, send shape, and the real server."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import msgspec
import pytest

from gateway.carriers import messagebird
from gateway.carriers.base import (
    Callback,
    CallbackRequest,
    CarrierContext,
    DeliveryReport,
    Ignored,
    InboundSms,
    SendResult,
    Submission,
)
from gateway.carriers.messagebird import (
    build_send_request,
    parse_callback,
    read_send_response,
    verify_signature,
)
from gateway.clock import ManualClock
from gateway.config import MessageBirdConfig, config_from_mapping
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import Message, TargetStatus
from tests.conftest import (
    SHARED,
    CustomerEndpoint,
    FakeCarrierApi,
    GatewayServer,
    Reply,
    ServerFactory,
    event_kinds,
)
from tests.test_api_messages import assert_error

SAMPLES = Path(__file__).parent / "samples" / "messagebird"
VECTORS = msgspec.json.decode((SHARED / "spec" / "vectors" / "messagebird.json").read_bytes())
SIGNING_KEY = "mb-test-signing-key-" + "0123456789abcdef" * 3  # >= 64 bytes: fine for HS512
ACCESS_KEY = "test_mb_access_key"
NUMBER = "+31970000001"  # the tenant's MessageBird number
HANDSET = "+31612345678"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def get_request(query: bytes, url: str = "https://gw.example/hooks/messagebird") -> CallbackRequest:
    pairs = dict(httpx.QueryParams(query.decode()))
    return CallbackRequest("GET", f"{url}?{query.decode()}", {}, pairs, b"")


def sign(
    url: str,
    body: bytes = b"",
    *,
    now_s: float,
    key: str = SIGNING_KEY,
    algorithm: str = "HS256",
    lifetime_s: int = 60,
    **claims: Any,
) -> str:
    """A MessageBird-Signature-JWT as MessageBird builds it (carriers.md §6)."""
    payload: dict[str, Any] = {
        "iss": "MessageBird",
        "nbf": int(now_s),
        "exp": int(now_s) + lifetime_s,
        "jti": str(uuid.uuid4()),
        "url_hash": hashlib.sha256(url.encode()).hexdigest(),
    }
    if body:
        payload["payload_hash"] = hashlib.sha256(body).hexdigest()
    return jwt.encode(payload | claims, key, algorithm=algorithm)


# Published vectors --------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS, ids=[case["name"] for case in VECTORS])
def test_published_vectors(case: dict[str, Any]) -> None:
    now_s = dt.datetime.fromisoformat(case["timestamp"]).timestamp()
    body = (case.get("payload") or "").encode()
    check = (case.get("secret", ""), case["token"], case["url"], body, now_s)
    if case["valid"]:
        verify_signature(*check)
    else:
        with pytest.raises(InvalidSignature):
            verify_signature(*check)


def test_all_published_vectors_are_read() -> None:
    assert len(VECTORS) == 44
    assert sum(case["valid"] for case in VECTORS) == 24


NOW_S = 1_767_225_600.0
URL = "https://gw.example/hooks/messagebird?id=1"


@pytest.mark.parametrize(
    ("token", "body"),
    [
        pytest.param(sign(URL, now_s=NOW_S, iss="NotMessageBird"), b"", id="other issuer"),
        pytest.param(sign(URL, now_s=NOW_S, nbf="soon"), b"", id="nbf not a number"),
        pytest.param(sign(URL, now_s=NOW_S, url_hash=None), b"", id="no url_hash"),
        pytest.param(sign(URL, now_s=NOW_S, url_hash=5), b"", id="url_hash not text"),
        pytest.param(sign(URL, b"x", now_s=NOW_S, payload_hash=7), b"x", id="payload_hash number"),
        pytest.param(sign(URL, now_s=NOW_S - 62), b"", id="expired past the leeway"),
        pytest.param(sign(URL, now_s=NOW_S + 2), b"", id="not yet valid past the leeway"),
        pytest.param("not.a.jwt", b"", id="garbage"),
    ],
)
def test_verify_refuses(token: str, body: bytes) -> None:
    with pytest.raises(InvalidSignature) as caught:
        verify_signature(SIGNING_KEY, token, URL, body, NOW_S)
    assert SIGNING_KEY not in str(caught.value)


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_verify_accepts_each_hmac_algorithm_within_the_leeway(algorithm: str) -> None:
    verify_signature(SIGNING_KEY, sign(URL, now_s=NOW_S + 1, algorithm=algorithm), URL, b"", NOW_S)
    verify_signature(SIGNING_KEY, sign(URL, now_s=NOW_S - 60), URL, b"", NOW_S)


# Parsing ------------------------------------------------------------------------------------


REPORT_ID = "efa6405d518d4c0c88cce11f7db775fb"


def report_key(status: str, at: str, message_id: str = REPORT_ID) -> str:
    return msgspec.json.encode([message_id, "31612345678", status, at]).decode()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "status_sent.txt",
            Callback(
                report_key("sent", "2017-09-01T10:00:00+00:00"),
                DeliveryReport(REPORT_ID, TargetStatus.SENT, "sent", "", parts=1),
            ),
        ),
        (
            "status_delivered.txt",
            Callback(
                report_key("delivered", "2017-09-01T10:00:05+00:00"),
                DeliveryReport(REPORT_ID, TargetStatus.DELIVERED, "delivered", "0", parts=1),
            ),
        ),
        (
            "status_delivery_failed.txt",
            Callback(
                report_key("delivery_failed", "2017-09-01T10:00:05+00:00"),
                DeliveryReport(REPORT_ID, TargetStatus.FAILED, "delivery_failed", "1", parts=1),
            ),
        ),
        (
            "status_expired.txt",
            Callback(
                report_key("expired", "2017-09-04T10:00:00+00:00"),
                DeliveryReport(REPORT_ID, TargetStatus.FAILED, "expired", "", parts=1),
            ),
        ),
        (
            "status_delivered_sdk_example.txt",
            Callback(
                report_key(
                    "delivered", "2019-01-11T09:17:11+00:00", "eef0ab57a9e049be946f3821568c2b2e"
                ),
                DeliveryReport(
                    "eef0ab57a9e049be946f3821568c2b2e", TargetStatus.DELIVERED, "delivered"
                ),
            ),
        ),
        (
            "inbound.txt",
            Callback(
                "e8077d803532c0b5937c639b60216938",
                InboundSms(
                    "e8077d803532c0b5937c639b60216938",
                    source="+31612345678",
                    destination="+31642500190",
                    text="This is an incoming message",
                ),
            ),
        ),
    ],
)
def test_parse_samples(name: str, expected: Callback) -> None:
    assert parse_callback(get_request(sample(name))) == expected


def test_inbound_as_a_form_body() -> None:
    body = sample("inbound.txt")
    headers = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
    request = CallbackRequest("POST", "https://gw.example/hooks/messagebird", headers, {}, body)
    assert parse_callback(request) == parse_callback(get_request(body))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("scheduled", TargetStatus.SENT),
        ("sent", TargetStatus.SENT),
        ("buffered", TargetStatus.SENT),
        ("delivered", TargetStatus.DELIVERED),
        ("delivery_failed", TargetStatus.FAILED),
        ("expired", TargetStatus.FAILED),
    ],
)
def test_status_table(status: str, expected: TargetStatus) -> None:
    query = f"id=m1&recipient=316&status={status}&statusDatetime=t&statusErrorCode=104"
    callback = parse_callback(get_request(query.encode()))
    assert callback.event == DeliveryReport("m1", expected, status, "104")


def test_an_untracked_status_is_ignored() -> None:
    query = b"id=m1&recipient=316&status=something_new&statusDatetime=t"
    assert isinstance(parse_callback(get_request(query)).event, Ignored)


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"foo=bar",
        b"recipient=316&status=sent&statusDatetime=t",  # no id
        b"id=&recipient=316&status=sent&statusDatetime=t",
        b"id=m1&recipient=316&status=sent",  # no statusDatetime
        b"id=m1&recipient=316&status=sent&statusDatetime=t&messagePartCount=two",
        b"id=m1&recipient=316&status=sent&statusDatetime=t&messagePartCount=0",
        b"id=i1&originator=316&body=hi",  # inbound without recipient
    ],
)
def test_malformed_callbacks(query: bytes) -> None:
    with pytest.raises(MalformedCallback):
        parse_callback(get_request(query))


def test_numbers_gain_and_lose_the_plus() -> None:
    assert messagebird.to_e164("31612345678") == "+31612345678"
    assert messagebird.to_e164("MessageBird") == "MessageBird"
    assert messagebird.to_msisdn("+31612345678") == "31612345678"
    assert messagebird.to_msisdn("Acme") == "Acme"


# Send ---------------------------------------------------------------------------------------


CONFIG = MessageBirdConfig(access_key=ACCESS_KEY, signing_key=SIGNING_KEY)


def test_build_send_request() -> None:
    submission = Submission(
        NUMBER, HANDSET, "hi there", "https://gw.example/hooks/messagebird", "m:0"
    )
    url, headers, body = build_send_request(CONFIG, submission)
    assert url == "https://rest.messagebird.com/messages"
    assert headers["authorization"] == f"AccessKey {ACCESS_KEY}"
    assert headers["content-type"] == "application/json"
    assert msgspec.json.decode(body) == {
        "originator": "31970000001",
        "recipients": ["31612345678"],
        "body": "hi there",
        "reportUrl": "https://gw.example/hooks/messagebird",
        "reference": "m:0",
    }


def test_read_send_response_success() -> None:
    result = read_send_response(201, sample("send_response.json"))
    assert result == SendResult("e8077d803532c0b5937c639b60216938", parts=1, carrier_status="sent")
    assert read_send_response(200, b'{"id": "abc"}') == SendResult("abc")
    odd = (
        b'{"id": "abc", "recipients": {"items": [{"status": "scheduled", "messagePartCount": 0}]}}'
    )
    assert read_send_response(201, odd) == SendResult("abc", None, "scheduled")


def test_keys_can_come_from_the_environment() -> None:
    raw = {"carriers": {"messagebird": {"access_key": "env:MB_KEY", "signing_key": "env:MB_SIG"}}}
    config = config_from_mapping(raw, environ={"MB_KEY": "live_abc", "MB_SIG": "sig"})
    section = config.carriers.messagebird
    assert section is not None
    assert "live_abc" not in repr(section)
    submission = Submission(NUMBER, HANDSET, "x", "https://gw.example/hooks/messagebird", "m:0")
    _, headers, _ = build_send_request(section, submission)
    assert headers["authorization"] == "AccessKey live_abc"


@pytest.mark.parametrize(
    ("status_code", "body", "code"),
    [
        (401, sample("send_error.json"), "2"),
        (422, sample("send_error_recipients.json"), "9"),
        (422, b'{"errors": [{"code": "x1"}]}', "x1"),
        (404, b"<html>not found</html>", "404"),
        (400, b'{"errors": []}', "400"),
    ],
)
def test_read_send_response_refusal(status_code: int, body: bytes, code: str) -> None:
    with pytest.raises(CarrierPermanentError) as caught:
        read_send_response(status_code, body)
    assert caught.value.error_code == code


@pytest.mark.parametrize(
    ("status_code", "body"),
    [
        (429, b'{"errors": [{"code": 429}]}'),
        (500, b'{"errors": [{"code": 99, "description": "internal error"}]}'),
        (503, b""),
        (201, b"<html>"),
        (201, b'{"recipients": {}}'),  # no id
    ],
)
def test_read_send_response_transient(status_code: int, body: bytes) -> None:
    with pytest.raises(CarrierTransientError):
        read_send_response(status_code, body)


@pytest.mark.parametrize("missing", ["access_key", "signing_key"])
async def test_config_needs_both_keys(missing: str) -> None:
    section = msgspec.structs.replace(CONFIG, **{missing: ""})
    async with httpx.AsyncClient() as http:
        context = CarrierContext(http, "https://gw.example", ManualClock())
        with pytest.raises(ConfigError, match=missing):
            messagebird.from_config(section, context)


# End to end through the real server ---------------------------------------------------------


def accepted(carrier_message_id: str, status: str = "sent") -> Reply:
    body = msgspec.json.decode(sample("send_response.json"))
    body["id"] = carrier_message_id
    body["recipients"]["items"][0]["status"] = status
    return Reply(201, msgspec.json.encode(body))


async def start(
    start_gateway: ServerFactory, api: FakeCarrierApi | None = None, **kwargs: Any
) -> GatewayServer:
    section = {"access_key": ACCESS_KEY, "signing_key": SIGNING_KEY}
    if api is not None:
        section["base_url"] = api.base_url
    return await start_gateway(carriers={"messagebird": section}, **kwargs)


async def call_hook(
    server: GatewayServer,
    query: str | bytes,
    *,
    signed_query: str | bytes | None = None,
    now_s: float | None = None,
    **sign_args: Any,
) -> httpx.Response:
    """A GET to /hooks/messagebird, signed for `signed_query` (default: the query sent)."""
    query = query.decode() if isinstance(query, bytes) else query
    signed = query if signed_query is None else signed_query
    signed = signed.decode() if isinstance(signed, bytes) else signed
    now_s = server.clock.now().timestamp() if now_s is None else now_s
    token = sign(f"{server.url}/hooks/messagebird?{signed}", now_s=now_s, **sign_args)
    headers = {"MessageBird-Signature-JWT": token}
    return await server.client.get(f"/hooks/messagebird?{query}", headers=headers)


def report(message_id: str, status: str, at: str, code: str = "") -> str:
    fields = {
        "id": message_id, "reference": "ref", "recipient": HANDSET[1:], "status": status,
        "statusDatetime": at, "statusReason": "r", "statusErrorCode": code, "mccmnc": "20408",
        "messagePartCount": "1",
    }  # fmt: skip
    return urlencode(fields)


async def stored(server: GatewayServer, message_id: str) -> Message:
    message = await server.gateway.store.get_message(message_id)
    assert message is not None
    return message


async def sent_message(
    server: GatewayServer,
    api: FakeCarrierApi,
    carrier_message_id: str,
    text: str = "hello",
    webhook_uri: str = "",
) -> str:
    """A message to HANDSET through the API, dispatched once and accepted by the fake API."""
    tenant = await server.add_tenant(NUMBER, webhook_uri=webhook_uri, carrier="messagebird")
    api.replies.append(accepted(carrier_message_id))
    message_id: str = (await server.send(tenant, [HANDSET], text)).json()["id"]
    assert await server.gateway.dispatcher.run_once() == 1
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.SENT
    return message_id


async def test_inbound_sms_becomes_an_inbound_message(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start(start_gateway)
    tenant = await server.add_tenant(
        "+31642500190", webhook_uri=customer_endpoint.url, carrier="messagebird"
    )
    response = await call_hook(server, sample("inbound.txt"))
    assert response.status_code == 200
    assert response.text == "OK"
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert message.direction.value == "inbound"
    assert message.source.target == "+31612345678"
    assert message.text == "This is an incoming message"
    target = message.targets[0]
    assert (target.destination.target, target.status) == ("+31642500190", TargetStatus.RECEIVED)
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id
    # MessageBird retries: the same SMS again stores nothing more.
    assert (await call_hook(server, sample("inbound.txt"))).status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 1


async def test_send_reaches_the_api_with_the_documented_fields(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    message_id = await sent_message(server, fake_carrier_api, "mb-1", "hello bird")
    [request] = fake_carrier_api.received
    assert (request.method, request.path) == ("POST", "/messages")
    assert request.headers["authorization"] == f"AccessKey {ACCESS_KEY}"
    assert request.json() == {
        "originator": NUMBER[1:],
        "recipients": [HANDSET[1:]],
        "body": "hello bird",
        "reportUrl": f"{server.url}/hooks/messagebird",
        "reference": f"{message_id}:0",
    }
    target = (await stored(server, message_id)).targets[0]
    assert (target.status, target.carrier_status, target.parts) == (TargetStatus.SENT, "sent", 1)
    async with server.gateway.store.reading() as tx:
        row = await tx.one(
            "SELECT carrier_message_id FROM targets WHERE message_id = ?", (message_id,)
        )
    assert row is not None and row["carrier_message_id"] == "mb-1"


async def test_reports_move_sent_to_delivered_and_failed(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    first = await sent_message(server, fake_carrier_api, "mb-ok")
    at = "2026-01-01T00:00:05+00:00"
    assert (await call_hook(server, report("mb-ok", "delivered", at))).status_code == 200
    target = (await stored(server, first)).targets[0]
    assert (target.status, target.carrier_status) == (TargetStatus.DELIVERED, "delivered")

    fake_carrier_api.replies.append(accepted("mb-ko"))
    tenant = await server.add_tenant("+31970000002", carrier="messagebird")
    second = (await server.send(tenant, [HANDSET], "doomed")).json()["id"]
    await server.gateway.dispatcher.run_once()
    failed = report("mb-ko", "delivery_failed", at, code="1")
    assert (await call_hook(server, failed)).status_code == 200
    target = (await stored(server, second)).targets[0]
    assert (target.status, target.carrier_status, target.error_code) == (
        TargetStatus.FAILED, "delivery_failed", "1"
    )  # fmt: skip


async def test_duplicate_and_reordered_reports_change_nothing_twice(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    message_id = await sent_message(
        server, fake_carrier_api, "mb-1", webhook_uri=customer_endpoint.url
    )
    delivered = report("mb-1", "delivered", "2026-01-01T00:00:09+00:00")
    late = [
        delivered,  # MessageBird's retry of the same report
        report("mb-1", "sent", "2026-01-01T00:00:01+00:00"),  # overtaken by delivered
        report("mb-1", "buffered", "2026-01-01T00:00:02+00:00"),
        report("mb-1", "delivery_failed", "2026-01-01T00:00:10+00:00", code="5"),
    ]
    for query in [delivered, *late]:
        assert (await call_hook(server, query)).status_code == 200
    target = (await stored(server, message_id)).targets[0]
    assert (target.status, target.carrier_status, target.error_code) == (
        TargetStatus.DELIVERED, "delivered", ""
    )  # fmt: skip
    assert await event_kinds(server, message_id) == [
        "message_created", "message_updated", "message_updated"
    ]  # fmt: skip


async def test_forged_stale_and_unsigned_callbacks_are_403_and_store_nothing(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    clock = ManualClock()
    server = await start(start_gateway, fake_carrier_api, clock=clock, run_workers=False)
    message_id = await sent_message(
        server, fake_carrier_api, "mb-1", webhook_uri=customer_endpoint.url
    )
    tenant = await server.add_tenant("+31642500190", carrier="messagebird")
    inbound = sample("inbound.txt").decode()
    now_s = clock.now().timestamp()
    delivered = report("mb-1", "delivered", "2026-01-01T00:00:09+00:00")
    responses = [
        await call_hook(server, inbound, key="x" * 64),
        await call_hook(server, delivered, key="x" * 64),
        await call_hook(server, inbound, now_s=now_s - 62),  # expired a second ago
        await call_hook(server, inbound, now_s=now_s + 5),  # not valid yet
        await call_hook(server, delivered, signed_query=report("mb-1", "sent", "t")),
        await call_hook(server, inbound.replace("incoming", "forged"), signed_query=inbound),
        await call_hook(server, inbound, algorithm="none", key=""),
        await server.client.get(f"/hooks/messagebird?{inbound}"),
        await server.client.get(
            f"/hooks/messagebird?{inbound}", headers={"MessageBird-Signature-JWT": "a.b.c"}
        ),
    ]
    for response in responses:
        assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    assert await server.gateway.store.list_messages(tenant.id, 10, None) == []
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.SENT
    assert len(await server.gateway.store.outbox_states(message_id)) == 2  # created, sent
    # The genuine callbacks still go through: the forgeries consumed no idempotency key.
    assert (await call_hook(server, inbound)).status_code == 200
    assert (await call_hook(server, delivered)).status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 1
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.DELIVERED
    assert len(await server.gateway.store.outbox_states(message_id)) == 3


async def test_a_body_the_token_does_not_cover_is_refused(
    start_gateway: ServerFactory,
) -> None:
    server = await start(start_gateway, run_workers=False)
    tenant = await server.add_tenant("+31642500190", carrier="messagebird")
    body = sample("inbound.txt")
    url = f"{server.url}/hooks/messagebird"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    now_s = server.clock.now().timestamp()
    unsigned_body = {"MessageBird-Signature-JWT": sign(url, now_s=now_s)} | headers
    refused = await server.client.post("/hooks/messagebird", content=body, headers=unsigned_body)
    assert_error(refused, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    assert await server.gateway.store.list_messages(tenant.id, 10, None) == []
    signed_body = {"MessageBird-Signature-JWT": sign(url, body, now_s=now_s)} | headers
    taken = await server.client.post("/hooks/messagebird", content=body, headers=signed_body)
    assert taken.status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 1


async def test_send_refusal_fails_and_throttling_retries(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    clock = ManualClock()
    server = await start(
        start_gateway, fake_carrier_api, clock=clock, run_workers=False,
        dispatch={"retry_delays_s": [1]},
    )  # fmt: skip
    tenant = await server.add_tenant(NUMBER, carrier="messagebird")
    fake_carrier_api.replies = [Reply(422, sample("send_error_recipients.json"))]
    refused = (await server.send(tenant, [HANDSET], "no")).json()["id"]
    await server.gateway.dispatcher.run_once()
    target = (await stored(server, refused)).targets[0]
    assert (target.status, target.error_code) == (TargetStatus.FAILED, "9")

    fake_carrier_api.replies = [Reply(500, b'{"errors":[{"code":99}]}'), Reply(429, b"{}")]
    retried = (await server.send(tenant, [HANDSET], "later")).json()["id"]
    for _ in range(2):
        assert await server.gateway.dispatcher.run_once() == 1
        assert (await stored(server, retried)).targets[0].status is TargetStatus.QUEUED
        clock.advance(1)  # the retry delay, well within the send deadline
    assert len(fake_carrier_api.received) == 3
