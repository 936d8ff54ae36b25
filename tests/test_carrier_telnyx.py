"""Telnyx: Ed25519 vectors, recorded payloads, the send API shape, and the carrier end to end."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.carriers import telnyx
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
from gateway.config import TelnyxConfig
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

VECTORS: dict[str, Any] = json.loads((SHARED / "spec" / "vectors" / "telnyx.json").read_text())
SAMPLES = Path(__file__).parent / "samples" / "telnyx"
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTORS["seed_hex"]))
PUBLIC_KEY_B64: str = VECTORS["public_key_base64"]
API_KEY = "KEY0123456789ABCDEF"
CONFIG = TelnyxConfig(api_key=API_KEY, public_key=PUBLIC_KEY_B64, base_url="https://api.test")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def signed_headers(
    body: bytes, timestamp_s: int, key: Ed25519PrivateKey = SIGNING_KEY
) -> dict[str, str]:
    signature = key.sign(f"{timestamp_s}|".encode() + body)
    return {
        "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
        "telnyx-timestamp": str(timestamp_s),
        "content-type": "application/json",
    }


def public_key() -> Ed25519PublicKey:
    return telnyx.load_public_key(PUBLIC_KEY_B64)


# Vectors ----------------------------------------------------------------------------------------


def test_the_vector_key_is_rfc_8032_test_1() -> None:
    check = VECTORS["key_check"]
    public_key().verify(bytes.fromhex(check["signature_hex"]), b"")
    assert SIGNING_KEY.public_key().public_bytes_raw().hex() == VECTORS["public_key_hex"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["name"])
def test_vectors(case: dict[str, Any]) -> None:
    headers = {
        "telnyx-signature-ed25519": case["telnyx_signature_ed25519"],
        "telnyx-timestamp": case["telnyx_timestamp"],
    }
    body = case["body"].encode()
    now_s = float(case["telnyx_timestamp"])  # the clock frozen at the signed timestamp
    if case["valid"]:
        telnyx.verify_signature(public_key(), headers, body, now_s)
        assert isinstance(telnyx.parse_callback(body).event, InboundSms | DeliveryReport)
    else:
        with pytest.raises(InvalidSignature):
            telnyx.verify_signature(public_key(), headers, body, now_s)


@pytest.mark.parametrize(
    ("skew_s", "valid"), [(-301, False), (-300, True), (300, True), (301, False)]
)
def test_the_timestamp_must_be_within_300_s_either_way(skew_s: int, valid: bool) -> None:
    body = sample("message_received.json")
    headers = signed_headers(body, 1_700_000_000)
    now_s = 1_700_000_000 - skew_s
    if valid:
        telnyx.verify_signature(public_key(), headers, body, now_s)
    else:
        with pytest.raises(InvalidSignature, match="tolerance"):
            telnyx.verify_signature(public_key(), headers, body, now_s)


SIGNATURE = "telnyx-signature-ed25519"
TIMESTAMP = "telnyx-timestamp"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


OTHER_KEY = Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    "change",
    [
        {SIGNATURE: None},
        {TIMESTAMP: None},
        {TIMESTAMP: "1700000000.5"},
        {TIMESTAMP: "-1700000000"},
        {TIMESTAMP: ""},
        {TIMESTAMP: "\uff11700000000"},
        {SIGNATURE: "not base64!"},
        {SIGNATURE: b64(b"\0" * 63)},
        {SIGNATURE: b64(b"\0" * 64)},
        {SIGNATURE: signed_headers(b"{}", 1_700_000_000)[SIGNATURE]},
        {SIGNATURE: b64(OTHER_KEY.sign(b"1700000000|" + sample("message_received.json")))},
    ],
    ids=[
        "no-signature", "no-timestamp", "fractional-timestamp", "negative-timestamp",
        "empty-timestamp", "non-ascii-digit", "not-base64", "short-signature", "zero-signature",
        "other-body", "other-key",
    ],
)  # fmt: skip
def test_missing_malformed_or_wrong_headers_are_refused(change: dict[str, str | None]) -> None:
    body = sample("message_received.json")
    headers = signed_headers(body, 1_700_000_000)
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(InvalidSignature):
        telnyx.verify_signature(public_key(), headers, body, 1_700_000_000)


def test_the_same_signature_over_the_signed_bytes_passes() -> None:
    body = sample("message_received.json")
    telnyx.verify_signature(public_key(), signed_headers(body, 1_700_000_000), body, 1_700_000_000)


# Parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "message_received.json",
            Callback(
                "bf6307bd-884d-4c1f-b6ea-c62b8c495d3c",
                InboundSms(
                    carrier_message_id="7ee4241c-f127-47e5-9c34-3aac291f8058",
                    source="+18665550001",
                    destination="+18445550001",
                    text="Hello, World!",
                    parts=1,
                ),
            ),
        ),
        (
            "message_sent.json",
            Callback(
                "86f58db9-0fe3-4adc-9d1f-46e66e6e9323",
                DeliveryReport(
                    "40385f64-5717-4562-b3fc-2c963f66afa6", TargetStatus.SENT, "queued", "", 1
                ),
            ),
        ),
        (
            "message_finalized_delivered.json",
            Callback(
                "4ee8c3a6-4995-4309-a3c6-38e3db9ea4be",
                DeliveryReport(
                    "40385f64-5717-4562-b3fc-2c963f66afa6",
                    TargetStatus.DELIVERED,
                    "delivered",
                    "",
                    1,
                ),
            ),
        ),
        (
            "message_finalized_delivery_failed.json",
            Callback(
                "a7c1e6a4-3b0e-4c5e-9a57-0f6a7b2e1d11",
                DeliveryReport(
                    "b2e6f1a0-6c1d-4f6e-8c1b-2f4d2c9a7e55",
                    TargetStatus.FAILED,
                    "delivery_failed",
                    "40008",
                    2,
                ),
            ),
        ),
    ],
)
def test_samples_parse_to_exact_events(name: str, expected: Callback) -> None:
    assert telnyx.parse_callback(sample(name)) == expected


def test_vector_bodies_parse_to_exact_events() -> None:
    inbound, finalized = (case["body"].encode() for case in VECTORS["cases"][:2])
    assert telnyx.parse_callback(inbound) == Callback(
        "b301ed3f-1490-491f-995f-6e64e69674d4",
        InboundSms("7ee4241c-f127-47e5-9c34-3aac291f8058", "+13125550001", "+13125550002", "Hello"),
    )
    assert telnyx.parse_callback(finalized) == Callback(
        "4ee8c3a6-4995-4309-a3c6-38e3db9ea4be",
        DeliveryReport("40385f64-5717-4562-b3fc-2c963f66afa6", TargetStatus.DELIVERED, "delivered",
                       "", 1),
    )  # fmt: skip


def report_body(
    status: str,
    *,
    event_id: str = "evt-1",
    message_id: str = "msg-1",
    event_type: str = "message.finalized",
    errors: tuple[dict[str, Any], ...] = (),
) -> bytes:
    """A delivery report in the recorded sample's shape, with the given status and ids."""
    envelope = copy.deepcopy(json.loads(sample("message_finalized_delivered.json")))
    envelope["data"].update(id=event_id, event_type=event_type)
    envelope["data"]["payload"].update(id=message_id, errors=list(errors))
    envelope["data"]["payload"]["to"][0]["status"] = status
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    ("raw_status", "expected"),
    [
        ("queued", TargetStatus.SENT),
        ("sending", TargetStatus.SENT),
        ("sent", TargetStatus.SENT),
        ("scheduled", TargetStatus.SENT),
        ("delivered", TargetStatus.DELIVERED),
        ("delivery_failed", TargetStatus.FAILED),
        ("sending_failed", TargetStatus.FAILED),
        ("expired", TargetStatus.FAILED),
        ("cancelled", TargetStatus.FAILED),
        ("delivery_unconfirmed", TargetStatus.DLR_TIMEOUT),
    ],
)
def test_status_mapping_of_section_8(raw_status: str, expected: TargetStatus) -> None:
    callback = telnyx.parse_callback(report_body(raw_status, errors=({"code": 40001},)))
    assert callback.idempotency_key == "evt-1"
    assert callback.event == DeliveryReport("msg-1", expected, raw_status, "40001", 1)


def test_inbound_statuses_and_other_events_are_ignored() -> None:
    assert telnyx.parse_callback(report_body("webhook_delivered")) == Callback(
        "evt-1", Ignored("telnyx status 'webhook_delivered' is not tracked")
    )
    other = report_body("delivered", event_type="message.tagged")
    assert telnyx.parse_callback(other) == Callback(
        "evt-1", Ignored("telnyx event message.tagged is not tracked")
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"data": {"event_type": "message.received", "payload": {}}}',
        b'{"data": {"id": "e", "event_type": "message.received", "payload": {"id": "m"}}}',
        report_body("delivered").replace(b'"to": [', b'"to": [], "x": ['),
        b'{"data": {"id": "e", "event_type": "message.finalized", "payload": {"id": "m", '
        b'"to": [{"phone_number": "+1", "status": "delivered"}]}}, "meta": {"attempt": 1,}}',
    ],
    ids=[
        "not-json",
        "array",
        "no-event-id",
        "inbound-without-parties",
        "empty-to",
        "bad-json-tail",
    ],
)
def test_malformed_callbacks_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedCallback):
        telnyx.parse_callback(body)


# Sending ----------------------------------------------------------------------------------------

SUBMISSION = Submission(
    source="+18445550001",
    destination="+18665550001",
    text="Hello, World!",
    status_callback_url="https://gw.example.com/hooks/telnyx",
    reference="msg-1:0",
)


def test_build_send_request_is_the_documented_shape() -> None:
    url, headers, body = telnyx.build_send_request(CONFIG, SUBMISSION)
    assert url == "https://api.test/v2/messages"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "from": "+18445550001",
        "to": "+18665550001",
        "text": "Hello, World!",
        "webhook_url": "https://gw.example.com/hooks/telnyx",
    }


def test_build_send_request_names_the_messaging_profile_when_configured() -> None:
    config = msgspec.structs.replace(CONFIG, messaging_profile_id="4000eba1", base_url="https://a/")
    url, _, body = telnyx.build_send_request(config, SUBMISSION)
    assert url == "https://a/v2/messages"
    assert json.loads(body)["messaging_profile_id"] == "4000eba1"


def test_read_send_response_success() -> None:
    assert telnyx.read_send_response(200, sample("send_response.json")) == SendResult(
        "40385f64-5717-4562-b3fc-2c963f66afa6", parts=1, carrier_status="queued"
    )


@pytest.mark.parametrize(
    ("status_code", "body", "error_code"),
    [
        (400, sample("error_response.json"), "40310"),
        (422, b'{"errors": [{"code": 10015, "title": "Invalid value"}]}', "10015"),
        (401, b"", "401"),
        (403, b"<html>denied</html>", "403"),
    ],
)
def test_read_send_response_refusals_are_permanent(
    status_code: int, body: bytes, error_code: str
) -> None:
    with pytest.raises(CarrierPermanentError) as raised:
        telnyx.read_send_response(status_code, body)
    assert raised.value.error_code == error_code


@pytest.mark.parametrize(
    ("status_code", "body"),
    [(429, b'{"errors": [{"code": "10011"}]}'), (500, b""), (503, b"{}"), (200, b"{}"),
     (200, b"not json")],
)  # fmt: skip
def test_read_send_response_throttling_5xx_and_unreadable_are_transient(
    status_code: int, body: bytes
) -> None:
    with pytest.raises(CarrierTransientError):
        telnyx.read_send_response(status_code, body)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (TelnyxConfig(public_key=PUBLIC_KEY_B64), "api_key"),
        (TelnyxConfig(api_key=API_KEY), "public_key"),
        (TelnyxConfig(api_key=API_KEY, public_key="not base64!"), "public_key"),
        (TelnyxConfig(api_key=API_KEY, public_key=b64(b"k" * 31)), "public_key"),
    ],
    ids=["no-api-key", "no-public-key", "not-base64", "31-bytes"],
)  # fmt: skip
async def test_from_config_refuses_missing_or_bad_keys(config: TelnyxConfig, key: str) -> None:
    async with httpx.AsyncClient() as http:
        context = CarrierContext(http, "https://gw.example.com", SystemClock())
        with pytest.raises(ConfigError, match=key) as raised:
            telnyx.from_config(config, context)
    assert API_KEY not in str(raised.value)


async def _send_through(handler: Any, timeout_s: float = 5.0) -> SendResult:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        carrier = telnyx.from_config(CONFIG, CarrierContext(http, "https://gw", SystemClock()))
        return await carrier.send(SUBMISSION, timeout_s)


async def test_send_translates_network_errors_and_timeouts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    with pytest.raises(CarrierTransientError, match="unreachable"):
        await _send_through(refuse)
    with pytest.raises(CarrierTransientError, match="in time"):
        await _send_through(hang, timeout_s=0.05)


# End to end -------------------------------------------------------------------------------------

TENANT_NUMBER = "+18445550001"
DESTINATION = "+18665550001"


async def telnyx_gateway(
    start_gateway: ServerFactory, api: FakeCarrierApi, **options: Any
) -> GatewayServer:
    section = {"api_key": API_KEY, "public_key": PUBLIC_KEY_B64, "base_url": api.base_url}
    return await start_gateway(carriers={"telnyx": section}, **options)


async def post_hook(
    server: GatewayServer, body: bytes, *, timestamp_s: int | None = None, **kwargs: Any
) -> httpx.Response:
    timestamp_s = int(time.time()) if timestamp_s is None else timestamp_s
    headers = signed_headers(body, timestamp_s, **kwargs)
    return await server.client.post("/hooks/telnyx", content=body, headers=headers)


def send_reply(carrier_message_id: str) -> Reply:
    response = json.loads(sample("send_response.json"))
    response["data"]["id"] = carrier_message_id
    return Reply(200, json.dumps(response).encode())


class Rig(CarrierRig):
    """A gateway sending through Telnyx (dispatcher stepped by hand) and its fake API."""

    async def post(self, body: bytes, **kwargs: Any) -> httpx.Response:
        return await post_hook(self.server, body, **kwargs)


@pytest.fixture
async def rig(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> Rig:
    server = await telnyx_gateway(start_gateway, fake_carrier_api, run_workers=False)
    # A webhook URI, so every change queues its event (not delivered: workers are off).
    tenant = await server.add_tenant(TENANT_NUMBER, customer_endpoint.url, carrier="telnyx")
    return Rig(server, tenant, fake_carrier_api, DESTINATION, "Hello, World!")


async def test_e2e_inbound_becomes_a_message_and_message_created(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    server = await telnyx_gateway(start_gateway, fake_carrier_api)
    tenant = await server.add_tenant(TENANT_NUMBER, customer_endpoint.url, carrier="telnyx")
    response = await post_hook(server, sample("message_received.json"))
    assert response.status_code == 200
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.direction.value, message.source.target, message.text) == (
        "inbound", "+18665550001", "Hello, World!"
    )  # fmt: skip
    assert [(t.destination.target, t.status, t.carrier) for t in message.targets] == [
        (TENANT_NUMBER, TargetStatus.RECEIVED, "telnyx")
    ]
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id
    # Telnyx retries the same event: one message, one event.
    assert (await post_hook(server, sample("message_received.json"))).status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 1
    states = await server.gateway.store.outbox_states(message.id)
    assert [kind for kind, _, _ in states] == ["message_created"]


async def test_e2e_send_reaches_the_api_with_the_documented_fields(rig: Rig) -> None:
    rig.api.replies = [send_reply("tlx-msg-1")]
    message_id = await rig.send()
    [request] = rig.api.received
    assert (request.method, request.path) == ("POST", "/v2/messages")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "from": TENANT_NUMBER,
        "to": DESTINATION,
        "text": "Hello, World!",
        "webhook_url": rig.server.url + "/hooks/telnyx",
    }
    target = await rig.target(message_id)
    assert (target.status, target.carrier_status, target.parts) == (TargetStatus.SENT, "queued", 1)
    assert await rig.carrier_message_id(message_id) == "tlx-msg-1"


async def test_e2e_reports_move_sent_to_delivered_and_to_failed_with_the_code(rig: Rig) -> None:
    rig.api.replies = [send_reply("tlx-ok"), send_reply("tlx-bad")]
    delivered_id = await rig.send("one")
    failed_id = await rig.send("two")
    reports = [
        report_body("sent", event_id="e1", message_id="tlx-ok", event_type="message.sent"),
        report_body("delivered", event_id="e2", message_id="tlx-ok"),
        report_body(
            "delivery_failed", event_id="e3", message_id="tlx-bad", errors=({"code": "40008"},)
        ),
    ]
    for body in reports:
        assert (await rig.post(body)).status_code == 200
    delivered = await rig.target(delivered_id)
    assert (delivered.status, delivered.carrier_status) == (TargetStatus.DELIVERED, "delivered")
    failed = await rig.target(failed_id)
    assert (failed.status, failed.carrier_status, failed.error_code) == (
        TargetStatus.FAILED, "delivery_failed", "40008"
    )  # fmt: skip
    assert await rig.event_kinds(delivered_id) == ["message_created"] + ["message_updated"] * 2


async def test_e2e_duplicate_and_reordered_reports_change_nothing_twice(rig: Rig) -> None:
    rig.api.replies = [send_reply("tlx-1")]
    message_id = await rig.send()
    delivered = report_body("delivered", event_id="e-final", message_id="tlx-1")
    late_sent = report_body(
        "sent", event_id="e-sent", message_id="tlx-1", event_type="message.sent"
    )
    late_failed = report_body("delivery_failed", event_id="e-fail", message_id="tlx-1",
                              errors=({"code": "40008"},))  # fmt: skip
    for body in (delivered, delivered, late_sent, late_failed, late_sent):
        assert (await rig.post(body)).status_code == 200
    target = await rig.target(message_id)
    assert (target.status, target.carrier_status, target.error_code) == (
        TargetStatus.DELIVERED, "delivered", ""
    )  # fmt: skip
    assert await rig.event_kinds(message_id) == ["message_created"] + ["message_updated"] * 2


async def test_e2e_delivery_unconfirmed_is_dlr_timeout_and_a_late_delivered_applies(
    rig: Rig,
) -> None:
    rig.api.replies = [send_reply("tlx-2")]
    message_id = await rig.send()
    unconfirmed = report_body("delivery_unconfirmed", event_id="e-1", message_id="tlx-2")
    assert (await rig.post(unconfirmed)).status_code == 200
    assert (await rig.target(message_id)).status is TargetStatus.DLR_TIMEOUT
    assert (await rig.post(report_body("delivered", event_id="e-2", message_id="tlx-2"))).is_success
    assert (await rig.target(message_id)).status is TargetStatus.DELIVERED
    assert await rig.event_kinds(message_id) == ["message_created"] + ["message_updated"] * 3


async def test_e2e_forged_stale_and_unsigned_callbacks_are_403_and_store_nothing(
    rig: Rig,
) -> None:
    body = sample("message_received.json")
    now_s = int(time.time())
    responses = [
        await rig.post(body, key=Ed25519PrivateKey.generate()),
        await rig.post(body, timestamp_s=now_s - 360),  # well outside 300 s, however slow the run
        await rig.post(body, timestamp_s=now_s + 360),
        await rig.server.client.post("/hooks/telnyx", content=body),
        await rig.server.client.post(
            "/hooks/telnyx",
            content=body.replace(b"Hello", b"Hellp"),
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


async def test_e2e_signed_but_malformed_callback_is_400(rig: Rig) -> None:
    response = await rig.post(b'{"data": {"id": 5}}')
    assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_CALLBACK")


async def test_e2e_permanent_refusal_fails_the_target_with_the_carrier_code(rig: Rig) -> None:
    rig.api.replies = [Reply(400, sample("error_response.json"))]
    message_id = await rig.send()
    target = await rig.target(message_id)
    assert (target.status, target.error_code) == (TargetStatus.FAILED, "40310")


@pytest.mark.parametrize("status_code", [429, 500, 503])
async def test_e2e_throttling_and_5xx_are_retried_later(rig: Rig, status_code: int) -> None:
    rig.api.replies = [Reply(status_code, b'{"errors": [{"code": "10011"}]}')]
    message_id = await rig.send()
    assert len(rig.api.received) == 1
    target = await rig.target(message_id)
    assert (target.status, target.error_code) == (TargetStatus.QUEUED, "")
    assert await rig.server.gateway.dispatcher.run_once() == 0  # the retry waits its backoff


async def test_e2e_a_report_before_the_send_answer_is_applied_once_sent(rig: Rig) -> None:
    early = report_body("delivered", event_id="e-early", message_id="tlx-early")
    assert (await rig.post(early)).status_code == 200
    rig.api.replies = [send_reply("tlx-early")]
    message_id = await rig.send()
    assert (await rig.target(message_id)).status is TargetStatus.DELIVERED
