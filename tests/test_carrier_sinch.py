"""Sinch: HMAC vectors, recorded payloads, the batches API shape, and the carrier end to end."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from gateway.carriers import sinch
from gateway.carriers.base import (
    Callback,
    CarrierContext,
    DeliveryReport,
    Ignored,
    InboundSms,
    SendResult,
    Submission,
)
from gateway.clock import SystemClock
from gateway.config import SinchConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus
from tests.conftest import (
    SHARED,
    CarrierRig,
    CustomerEndpoint,
    FakeCarrierApi,
    GatewayServer,
    Reply,
    ServerFactory,
)
from tests.test_api_messages import assert_error

VECTORS: dict[str, Any] = json.loads((SHARED / "spec" / "vectors" / "sinch.json").read_text())
SAMPLES = Path(__file__).parent / "samples" / "sinch"
SECRET = "test-sinch-webhook-secret"
API_TOKEN = "sinch-api-token-0123"
PLAN = "plan-0123456789"
CONFIG = SinchConfig(
    service_plan_id=PLAN, api_token=API_TOKEN, webhook_secret=SECRET, base_url="https://sms.test"
)
SIGNATURE = "x-sinch-webhook-signature"
NONCE = "x-sinch-webhook-signature-nonce"
TIMESTAMP = "x-sinch-webhook-signature-timestamp"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def signed_headers(
    body: bytes,
    timestamp_s: int,
    *,
    secret: str = SECRET,
    nonce: str = "01FJA8B4A7BM43YGWSG9GBV067",
) -> dict[str, str]:
    return {
        SIGNATURE: sinch.sign(secret, body, nonce, str(timestamp_s)),
        NONCE: nonce,
        TIMESTAMP: str(timestamp_s),
        "content-type": "application/json",
    }


# Vectors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["event_signature"]["cases"], ids=lambda case: case["name"])
def test_event_signature_vectors(case: dict[str, Any]) -> None:
    headers = {SIGNATURE: case["signature"], NONCE: case["nonce"], TIMESTAMP: case["timestamp"]}
    body = case["body"].encode()
    now_s = float(case["timestamp"])  # the clock frozen at the signed timestamp
    if case["valid"]:
        sinch.verify_signature(case["secret"], headers, body, now_s)
        assert (
            sinch.sign(case["secret"], body, case["nonce"], case["timestamp"]) == case["signature"]
        )
    else:
        with pytest.raises(InvalidSignature):
            sinch.verify_signature(case["secret"], headers, body, now_s)


@pytest.mark.parametrize(
    "case", VECTORS["numbers_signature"]["cases"], ids=lambda case: case["name"]
)
def test_numbers_api_signature_is_not_accepted_on_the_sms_hook(case: dict[str, Any]) -> None:
    # The Numbers API's x-sinch-signature (hex HMAC-SHA1 of the body) never signs SMS callbacks.
    body = case["body"].encode()
    digest = hmac.new(case["secret"].encode(), body, hashlib.sha1).hexdigest()
    assert digest == case["signature"]  # the vector itself holds
    with pytest.raises(InvalidSignature, match="missing"):
        sinch.verify_signature(case["secret"], {"x-sinch-signature": digest}, body, time.time())


@pytest.mark.parametrize(
    ("skew_s", "valid"), [(-301, False), (-300, True), (300, True), (301, False)]
)
def test_the_timestamp_must_be_within_300_s_either_way(skew_s: int, valid: bool) -> None:
    body = sample("mo_text.json")
    headers = signed_headers(body, 1_700_000_000)
    now_s = 1_700_000_000 - skew_s
    if valid:
        sinch.verify_signature(SECRET, headers, body, now_s)
    else:
        with pytest.raises(InvalidSignature, match="tolerance"):
            sinch.verify_signature(SECRET, headers, body, now_s)


@pytest.mark.parametrize(
    "change",
    [
        {SIGNATURE: None},
        {NONCE: None},
        {TIMESTAMP: None},
        {NONCE: ""},
        {TIMESTAMP: "1700000000.0"},
        {TIMESTAMP: "\uff11700000000"},
        {TIMESTAMP: "1700000001"},
        {NONCE: "another-nonce"},
        {SIGNATURE: "invalid"},
        {SIGNATURE: signed_headers(b"{}", 1_700_000_000)[SIGNATURE]},
        {SIGNATURE: signed_headers(sample("mo_text.json"), 1_700_000_000, secret="x")[SIGNATURE]},
    ],
    ids=[
        "no-signature", "no-nonce", "no-timestamp", "empty-nonce", "fractional-timestamp",
        "non-ascii-digit", "other-timestamp", "other-nonce", "garbage", "other-body",
        "other-secret",
    ],
)  # fmt: skip
def test_missing_malformed_or_wrong_headers_are_refused(change: dict[str, str | None]) -> None:
    body = sample("mo_text.json")
    headers = signed_headers(body, 1_700_000_000)
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(InvalidSignature):
        sinch.verify_signature(SECRET, headers, body, 1_700_000_000)


# Parsing ----------------------------------------------------------------------------------------

DISPATCHED_KEY = "01FC66621XXXXX119Z8PMV1QPQ|+44231235674|Dispatched|2022-08-30T08:16:08.930Z"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "mo_text.json",
            Callback(
                "01FC66621XXXXX119Z8PMV1QPQ",
                InboundSms("01FC66621XXXXX119Z8PMV1QPQ", "+46701234567", "+46709876543",
                           "Hello world"),
            ),
        ),
        (
            "mo_text_full.json",
            Callback(
                "01FC66621XXXXX119Z8PMV1QPR",
                InboundSms("01FC66621XXXXX119Z8PMV1QPR", "+46701234567", "+46709876543",
                           "Hello world"),
            ),
        ),
        (
            "recipient_delivery_report_dispatched.json",
            Callback(
                DISPATCHED_KEY,
                DeliveryReport("01FC66621XXXXX119Z8PMV1QPQ", TargetStatus.SENT, "Dispatched"),
            ),
        ),
        (
            "recipient_delivery_report_delivered.json",
            Callback(
                "01FC66621XXXXX119Z8PMV1QPQ|+44231235674|Delivered|2022-08-30T08:16:12.112Z",
                DeliveryReport("01FC66621XXXXX119Z8PMV1QPQ", TargetStatus.DELIVERED, "Delivered",
                               "", 1),
            ),
        ),
        (
            "recipient_delivery_report_failed.json",
            Callback(
                "01FC66621XXXXX119Z8PMV1QPS|+44231235675|Failed|2022-08-30T08:16:09.500Z",
                DeliveryReport("01FC66621XXXXX119Z8PMV1QPS", TargetStatus.FAILED, "Failed", "402"),
            ),
        ),
    ],
)  # fmt: skip
def test_samples_parse_to_exact_events(name: str, expected: Callback) -> None:
    assert sinch.parse_callback(sample(name)) == expected


def test_summary_reports_and_other_types_are_ignored_and_keyed_by_body() -> None:
    body = sample("delivery_report_sms.json")
    callback = sinch.parse_callback(body)
    assert callback == Callback(
        "body:" + hashlib.sha256(body).hexdigest(),
        Ignored("sinch callback type delivery_report_sms is not tracked"),
    )
    assert sinch.parse_callback(body) == callback  # a retry is the same callback


def report_body(
    status: str, *, batch_id: str = "batch-1", code: int = 0, at: str = "2024-06-06T09:22:14.304Z"
) -> bytes:
    """A per-recipient report in the recorded sample's shape."""
    report = json.loads(sample("recipient_delivery_report_dispatched.json"))
    report.update(status=status, batch_id=batch_id, code=code, at=at)
    return json.dumps(report).encode()


@pytest.mark.parametrize(
    ("raw_status", "expected", "error_code"),
    [
        ("Queued", TargetStatus.SENT, ""),
        ("Dispatched", TargetStatus.SENT, ""),
        ("Delivered", TargetStatus.DELIVERED, ""),
        ("Failed", TargetStatus.FAILED, "406"),
        ("Rejected", TargetStatus.FAILED, "406"),
        ("Aborted", TargetStatus.FAILED, "406"),
        ("Cancelled", TargetStatus.FAILED, "406"),
        ("Deleted", TargetStatus.FAILED, "406"),
        ("Expired", TargetStatus.FAILED, "406"),
        ("Unknown", TargetStatus.DLR_TIMEOUT, "406"),
    ],
)
def test_status_mapping_of_section_8(
    raw_status: str, expected: TargetStatus, error_code: str
) -> None:
    callback = sinch.parse_callback(report_body(raw_status, code=406))
    assert callback.event == DeliveryReport("batch-1", expected, raw_status, error_code)
    assert callback.idempotency_key == f"batch-1|+44231235674|{raw_status}|2024-06-06T09:22:14.304Z"


def test_an_unknown_status_is_ignored() -> None:
    callback = sinch.parse_callback(report_body("Teleported"))
    assert callback.event == Ignored("sinch status 'Teleported' is not tracked")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"id": "x"}',
        b'{"type": "mo_text", "id": "x", "from": "+1", "body": "hi"}',
        b'{"type": "recipient_delivery_report_sms", "batch_id": "b", "recipient": "+1", '
        b'"code": "x", "status": "Delivered", "at": "t"}',
        b'{"type": "mo_text", "id": "x", "from": "+1", "to": "+2", "body": "hi", "x": [1,]}',
    ],
    ids=["not-json", "no-type", "mo-without-to", "code-not-int", "bad-json-tail"],
)
def test_malformed_callbacks_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        sinch.parse_callback(body)


# Sending ----------------------------------------------------------------------------------------

SUBMISSION = Submission(
    source="+46709876543",
    destination="+46701234567",
    text="Hello world",
    status_callback_url="https://gw.example.com/hooks/sinch",
    reference="msg-1:0",
)


def test_build_send_request_is_the_documented_shape() -> None:
    url, headers, body = sinch.build_send_request(CONFIG, SUBMISSION)
    assert url == f"https://sms.test/xms/v1/{PLAN}/batches"
    assert headers["authorization"] == f"Bearer {API_TOKEN}"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "from": "+46709876543",
        "to": ["+46701234567"],
        "body": "Hello world",
        "delivery_report": "per_recipient",
        "callback_url": "https://gw.example.com/hooks/sinch",
        "client_reference": "msg-1:0",
    }


def test_read_send_response_success() -> None:
    assert sinch.read_send_response(201, sample("batch_response.json")) == SendResult(
        "01FC66621XXXXX119Z8PMV1QPQ"
    )


@pytest.mark.parametrize(
    ("status_code", "body", "error_code"),
    [
        (400, sample("error_response.json"), "syntax_constraint_violation"),
        (403, b'{"code": "unauthorized", "text": "Invalid credentials"}', "unauthorized"),
        (404, b"", "404"),
    ],
)
def test_read_send_response_refusals_are_permanent(
    status_code: int, body: bytes, error_code: str
) -> None:
    with pytest.raises(CarrierPermanentError) as raised:
        sinch.read_send_response(status_code, body)
    assert raised.value.error_code == error_code


@pytest.mark.parametrize(
    ("status_code", "body"), [(429, b""), (500, b"{}"), (503, b""), (201, b"{}"), (201, b"<html>")]
)
def test_read_send_response_throttling_5xx_and_unreadable_are_transient(
    status_code: int, body: bytes
) -> None:
    with pytest.raises(CarrierTransientError):
        sinch.read_send_response(status_code, body)


@pytest.mark.parametrize("key", ["service_plan_id", "api_token", "webhook_secret"])
async def test_from_config_refuses_an_empty_credential(key: str) -> None:
    config = msgspec.structs.replace(CONFIG, **{key: ""})
    async with httpx.AsyncClient() as http:
        context = CarrierContext(http, "https://gw.example.com", SystemClock())
        with pytest.raises(ConfigError, match=key) as raised:
            sinch.from_config(config, context)
    assert SECRET not in str(raised.value) and API_TOKEN not in str(raised.value)


async def test_send_translates_network_errors_and_timeouts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    for handler, timeout_s, match in ((refuse, 5.0, "unreachable"), (hang, 0.05, "in time")):
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            carrier = sinch.from_config(CONFIG, CarrierContext(http, "https://gw", SystemClock()))
            with pytest.raises(CarrierTransientError, match=match):
                await carrier.send(SUBMISSION, timeout_s)


# End to end -------------------------------------------------------------------------------------

TENANT_NUMBER = "+46709876543"
DESTINATION = "+46701234567"


async def sinch_gateway(
    start_gateway: ServerFactory, api: FakeCarrierApi, **options: Any
) -> GatewayServer:
    section = {
        "service_plan_id": PLAN,
        "api_token": API_TOKEN,
        "webhook_secret": SECRET,
        "base_url": api.base_url,
    }
    return await start_gateway(carriers={"sinch": section}, **options)


async def post_hook(
    server: GatewayServer, body: bytes, *, timestamp_s: int | None = None, **kwargs: Any
) -> httpx.Response:
    timestamp_s = int(time.time()) if timestamp_s is None else timestamp_s
    headers = signed_headers(body, timestamp_s, **kwargs)
    return await server.client.post("/hooks/sinch", content=body, headers=headers)


def batch_reply(batch_id: str) -> Reply:
    response = json.loads(sample("batch_response.json"))
    response["id"] = batch_id
    return Reply(201, json.dumps(response).encode())


class Rig(CarrierRig):
    """A gateway sending through Sinch (dispatcher stepped by hand) and its fake API."""

    async def post(self, body: bytes, **kwargs: Any) -> httpx.Response:
        return await post_hook(self.server, body, **kwargs)


@pytest.fixture
async def rig(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> Rig:
    server = await sinch_gateway(start_gateway, fake_carrier_api, run_workers=False)
    # A webhook URI, so every change queues its event (not delivered: workers are off).
    tenant = await server.add_tenant(TENANT_NUMBER, customer_endpoint.url, carrier="sinch")
    return Rig(server, tenant, fake_carrier_api, DESTINATION, "Hello world")


async def test_e2e_inbound_becomes_a_message_and_message_created(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    server = await sinch_gateway(start_gateway, fake_carrier_api)
    tenant = await server.add_tenant(TENANT_NUMBER, customer_endpoint.url, carrier="sinch")
    for _ in range(2):  # Sinch retries: one message, one event
        assert (await post_hook(server, sample("mo_text.json"))).status_code == 200
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.direction.value, message.source.target, message.text) == (
        "inbound", "+46701234567", "Hello world"
    )  # fmt: skip
    assert [(t.destination.target, t.status, t.carrier) for t in message.targets] == [
        (TENANT_NUMBER, TargetStatus.RECEIVED, "sinch")
    ]
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id
    states = await server.gateway.store.outbox_states(message.id)
    assert [kind for kind, _, _ in states] == ["message_created"]


async def test_e2e_send_reaches_the_batches_api_with_the_documented_fields(rig: Rig) -> None:
    rig.api.replies = [batch_reply("batch-send")]
    message_id = await rig.send()
    [request] = rig.api.received
    assert (request.method, request.path) == ("POST", f"/xms/v1/{PLAN}/batches")
    assert request.headers["authorization"] == f"Bearer {API_TOKEN}"
    assert request.json() == {
        "from": TENANT_NUMBER,
        "to": [DESTINATION],
        "body": "Hello world",
        "delivery_report": "per_recipient",
        "callback_url": rig.server.url + "/hooks/sinch",
        "client_reference": f"{message_id}:0",
    }
    assert (await rig.target(message_id)).status is TargetStatus.SENT
    # The batch id is the carrier message id: a report for it reaches this target.
    assert (await rig.post(report_body("Delivered", batch_id="batch-send"))).status_code == 200
    assert (await rig.target(message_id)).status is TargetStatus.DELIVERED


async def test_e2e_reports_move_sent_to_delivered_and_to_failed_with_the_code(rig: Rig) -> None:
    rig.api.replies = [batch_reply("batch-ok"), batch_reply("batch-bad")]
    delivered_id = await rig.send("one")
    failed_id = await rig.send("two")
    for body in (
        report_body("Dispatched", batch_id="batch-ok", code=401),
        report_body("Delivered", batch_id="batch-ok", at="2024-06-06T09:22:20.000Z"),
        report_body("Failed", batch_id="batch-bad", code=402),
    ):
        assert (await rig.post(body)).status_code == 200
    delivered = await rig.target(delivered_id)
    assert (delivered.status, delivered.carrier_status) == (TargetStatus.DELIVERED, "Delivered")
    failed = await rig.target(failed_id)
    assert (failed.status, failed.carrier_status, failed.error_code) == (
        TargetStatus.FAILED, "Failed", "402"
    )  # fmt: skip
    assert await rig.event_kinds(delivered_id) == ["message_created"] + ["message_updated"] * 2


async def test_e2e_duplicate_and_reordered_reports_change_nothing_twice(rig: Rig) -> None:
    rig.api.replies = [batch_reply("batch-1")]
    message_id = await rig.send()
    delivered = report_body("Delivered", at="2024-06-06T09:22:20.000Z")
    late_dispatched = report_body("Dispatched", code=401, at="2024-06-06T09:22:15.000Z")
    late_expired = report_body("Expired", code=406, at="2024-06-06T09:30:00.000Z")
    for body in (delivered, delivered, late_dispatched, late_expired, late_dispatched):
        assert (await rig.post(body)).status_code == 200
    target = await rig.target(message_id)
    assert (target.status, target.carrier_status, target.error_code) == (
        TargetStatus.DELIVERED, "Delivered", ""
    )  # fmt: skip
    assert await rig.event_kinds(message_id) == ["message_created"] + ["message_updated"] * 2


async def test_e2e_unknown_is_dlr_timeout_and_a_late_delivered_applies(rig: Rig) -> None:
    rig.api.replies = [batch_reply("batch-1")]
    message_id = await rig.send()
    assert (await rig.post(report_body("Unknown", code=0))).status_code == 200
    assert (await rig.target(message_id)).status is TargetStatus.DLR_TIMEOUT
    assert (await rig.post(report_body("Delivered", at="2024-06-07T00:00:00.000Z"))).is_success
    assert (await rig.target(message_id)).status is TargetStatus.DELIVERED


async def test_e2e_forged_stale_and_unsigned_callbacks_are_403_and_store_nothing(
    rig: Rig,
) -> None:
    body = sample("mo_text.json")
    now_s = int(time.time())
    responses = [
        await rig.post(body, secret="not-the-secret"),
        await rig.post(body, timestamp_s=now_s - 360),  # well outside 300 s, however slow the run
        await rig.post(body, timestamp_s=now_s + 360),
        await rig.server.client.post("/hooks/sinch", content=body),
        await rig.server.client.post(
            "/hooks/sinch",
            content=body.replace(b"Hello", b"Jello"),
            headers=signed_headers(body, now_s),
        ),
    ]
    for response in responses:
        assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    assert await rig.messages() == []
    assert (await rig.server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    # The forgeries used up no idempotency key: the genuine callback still goes in.
    assert (await rig.post(body)).status_code == 200
    assert len(await rig.messages()) == 1


async def test_e2e_permanent_refusal_fails_the_target_and_5xx_retries(rig: Rig) -> None:
    rig.api.replies = [Reply(400, sample("error_response.json")), Reply(503, b"")]
    refused_id = await rig.send("refused")
    refused = await rig.target(refused_id)
    assert (refused.status, refused.error_code) == (
        TargetStatus.FAILED, "syntax_constraint_violation"
    )  # fmt: skip
    retried_id = await rig.send("retried")
    assert (await rig.target(retried_id)).status is TargetStatus.QUEUED
    assert len(rig.api.received) == 2
