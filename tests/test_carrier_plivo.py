"""Plivo: V3/V2 signature vectors, recorded callbacks, the Message API shape, end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import msgspec
import pytest

from gateway.carriers import plivo
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
from gateway.clock import ManualClock, SystemClock
from gateway.config import PlivoConfig
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
    Tenant,
    basic_auth,
    event_kinds,
)
from tests.test_api_messages import assert_error

SAMPLES = Path(__file__).parent / "samples" / "plivo"
VECTORS: dict[str, Any] = msgspec.json.decode(
    (SHARED / "spec" / "vectors" / "plivo.json").read_bytes()
)
V2_CASES = VECTORS["v2"]["cases"]
V3_CASES = VECTORS["v3"]["cases"]
AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"
AUTH_TOKEN = "test-plivo-auth-token"
OWN_NUMBER = "+14155550123"
PEER = "+14155550100"
SAMPLE_UUID = "db3ce55a-7f1d-11e1-8ea7-1231380bc196"
NONCE = "05429567804466091622"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_request(name: str, method: str = "POST") -> CallbackRequest:
    url = "https://gateway.example.com/hooks/plivo"
    if method == "GET":
        text = sample(name).decode()
        return CallbackRequest("GET", f"{url}?{text}", {}, dict(parse_qsl(text)), b"")
    return CallbackRequest("POST", url, {}, {}, sample(name))


@pytest.fixture
async def carrier_for() -> AsyncIterator[Any]:
    async with httpx.AsyncClient() as http:
        context = CarrierContext(http, "https://gateway.example.com", SystemClock())

        def build(token: str) -> plivo.PlivoCarrier:
            return plivo.from_config(PlivoConfig(AUTH_ID, token, accept_v2=True), context)

        yield build


# Vectors ----------------------------------------------------------------------------------------


def v3_request(case: dict[str, Any], signature: str, **headers: str) -> CallbackRequest:
    url, method = case["url"], case["method"]
    body = urlencode(case["params"]).encode() if method == "POST" else b""
    all_headers = {
        "x-plivo-signature-v3": signature,
        "x-plivo-signature-v3-nonce": case["nonce"],
    } | headers
    return CallbackRequest(method, url, all_headers, dict(parse_qsl(urlsplit_query(url))), body)


def urlsplit_query(url: str) -> str:
    return url.partition("?")[2]


@pytest.mark.parametrize("case", V3_CASES, ids=[c["name"] for c in V3_CASES])
def test_v3_vectors(case: dict[str, Any], carrier_for: Any) -> None:
    params = list(case["params"].items())
    assert (
        plivo.v3_string_to_sign(case["method"], case["url"], params, case["nonce"])
        == case["string_to_sign"]
    )
    carrier_for(case["auth_token"]).verify(v3_request(case, case["signature"]), now_s=0)
    with pytest.raises(InvalidSignature):
        carrier_for("another-token").verify(v3_request(case, case["signature"]), now_s=0)


@pytest.mark.parametrize("case", V3_CASES, ids=[c["name"] for c in V3_CASES])
def test_v3_accepts_any_of_several_signatures(case: dict[str, Any], carrier_for: Any) -> None:
    several = f"c29tZXRoaW5nIGVsc2U=, {case['signature']}"
    carrier_for(case["auth_token"]).verify(v3_request(case, several), now_s=0)
    # ...also when it arrives as the main-account header.
    request = v3_request(case, "", **{"x-plivo-signature-ma-v3": case["signature"]})
    carrier_for(case["auth_token"]).verify(request, now_s=0)


@pytest.mark.parametrize("case", V3_CASES, ids=[c["name"] for c in V3_CASES])
def test_v3_refuses_a_changed_request(case: dict[str, Any], carrier_for: Any) -> None:
    carrier = carrier_for(case["auth_token"])
    if case["method"] == "POST":
        changed = case | {"params": case["params"] | {"Status": "failed"}}
    else:
        changed = case | {"url": case["url"].replace("delivered", "failed")}
    other_nonce = case | {"nonce": "1" + case["nonce"]}
    for request in (
        v3_request(changed, case["signature"]),
        v3_request(other_nonce, case["signature"]),
    ):
        with pytest.raises(InvalidSignature):
            carrier.verify(request, now_s=0)


@pytest.mark.parametrize("case", V2_CASES, ids=[c["name"] for c in V2_CASES])
def test_v2_vectors(case: dict[str, Any], carrier_for: Any) -> None:
    headers = {
        "x-plivo-signature-v2": case["signature"],
        "x-plivo-signature-v2-nonce": case["nonce"],
    }
    request = CallbackRequest("POST", case["url"], headers, {}, b"")
    if case["valid"]:
        carrier_for(case["auth_token"]).verify(request, now_s=0)
    else:
        with pytest.raises(InvalidSignature):
            carrier_for(case["auth_token"]).verify(request, now_s=0)


def test_v2_signs_the_url_without_its_query() -> None:
    case = V2_CASES[0]
    assert (
        plivo.v2_signature(case["auth_token"], case["url"] + "?x=1", "12345") == case["signature"]
    )


def test_a_failing_v3_is_not_rescued_by_v2() -> None:
    case = V3_CASES[0]
    url = case["url"]
    request = v3_request(
        case | {"params": case["params"] | {"Status": "failed"}},
        case["signature"],
        **{
            "x-plivo-signature-v2": plivo.v2_signature(case["auth_token"], url, "n"),
            "x-plivo-signature-v2-nonce": "n",
        },
    )
    with pytest.raises(InvalidSignature):
        plivo.verify_request(case["auth_token"], request)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-plivo-signature-v3": V3_CASES[0]["signature"]},  # no nonce
        {"x-plivo-signature-v3-nonce": NONCE},  # no signature
        {"x-plivo-signature-v3": "", "x-plivo-signature-v3-nonce": NONCE},
        {"x-plivo-signature-v2": V2_CASES[0]["signature"]},  # no nonce
        {"x-plivo-signature-v2-nonce": "12345"},
        {"x-plivo-signature-v3": ",,", "x-plivo-signature-v3-nonce": NONCE},
    ],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    case = V3_CASES[0]
    request = CallbackRequest("POST", case["url"], headers, {}, urlencode(case["params"]).encode())
    with pytest.raises(InvalidSignature):
        plivo.verify_request(case["auth_token"], request)


# Parsing recorded callbacks ---------------------------------------------------------------------


def test_parse_inbound_form() -> None:
    uuid = "1f3a4b5c-8d9e-11ee-b4f0-0242ac110002"
    sms = InboundSms(uuid, PEER, OWN_NUMBER, "Hi from Plivo \u2713", parts=1)
    assert plivo.parse_callback(sample_request("inbound.txt")) == Callback(uuid, sms)


def test_parse_inbound_get_query() -> None:
    uuid = "2a4b6c8d-8d9e-11ee-b4f0-0242ac110002"
    sms = InboundSms(uuid, PEER, OWN_NUMBER, "A longer reply in two parts", parts=2)
    request = sample_request("inbound_get_query.txt", "GET")
    assert plivo.parse_callback(request) == Callback(uuid, sms)


@pytest.mark.parametrize(
    ("name", "key", "status", "raw", "error_code"),
    [
        ("status_queued.txt", "seq:1", TargetStatus.SENT, "queued", ""),
        ("status_sent.txt", "seq:2", TargetStatus.SENT, "sent", ""),
        ("status_delivered.txt", "seq:3", TargetStatus.DELIVERED, "delivered", ""),
        ("status_undelivered.txt", "seq:3", TargetStatus.FAILED, "undelivered", "80"),
        ("status_failed.txt", "seq:2", TargetStatus.FAILED, "failed", "900"),
        ("status_rejected_legacy.txt", "status:rejected", TargetStatus.FAILED, "rejected", "100"),
    ],
)
def test_parse_status_callbacks(
    name: str, key: str, status: TargetStatus, raw: str, error_code: str
) -> None:
    report = DeliveryReport(SAMPLE_UUID, status, raw, error_code, parts=1)
    assert plivo.parse_callback(sample_request(name)) == Callback(f"{SAMPLE_UUID}:{key}", report)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("queued", TargetStatus.SENT),
        ("sent", TargetStatus.SENT),
        ("delivered", TargetStatus.DELIVERED),
        ("read", TargetStatus.DELIVERED),
        ("undelivered", TargetStatus.FAILED),
        ("failed", TargetStatus.FAILED),
        ("rejected", TargetStatus.FAILED),
    ],
)
def test_status_mapping(raw: str, status: TargetStatus) -> None:
    query = {"MessageUUID": SAMPLE_UUID, "Status": raw, "Sequence": "7"}
    request = CallbackRequest("GET", "https://gw/hooks/plivo", {}, query, b"")
    event = plivo.parse_callback(request).event
    assert isinstance(event, DeliveryReport)
    assert (event.status, event.carrier_status) == (status, raw)


def test_untracked_status_is_ignored() -> None:
    body = urlencode({"MessageUUID": SAMPLE_UUID, "Status": "received"}).encode()
    request = CallbackRequest("POST", "https://gw/hooks/plivo", {}, {}, body)
    assert plivo.parse_callback(request) == Callback(
        f"{SAMPLE_UUID}:status:received", Ignored("Plivo status 'received' is not tracked")
    )


@pytest.mark.parametrize(
    "body",
    [
        b"Status=delivered",  # no MessageUUID
        b"From=1&To=2&Text=hi",  # inbound without MessageUUID
        b"MessageUUID=x&From=1&To=2&Units=two",
        b"\xff\xfe",
    ],
)
def test_malformed_callbacks(body: bytes) -> None:
    request = CallbackRequest("POST", "https://gw/hooks/plivo", {}, {}, body)
    with pytest.raises(MalformedCallback):
        plivo.parse_callback(request)


def test_numbers_without_plus_become_e164() -> None:
    assert (plivo.e164("14155550100"), plivo.e164("+14155550100")) == (PEER, PEER)
    assert plivo.e164("PLIVO") == "PLIVO"


# Send ------------------------------------------------------------------------------------------


def submission() -> Submission:
    return Submission(
        source=OWN_NUMBER,
        destination=PEER,
        text="Hi there",
        status_callback_url="https://gateway.example.com/hooks/plivo",
        reference="msg-1:0",
    )


def test_build_send_request() -> None:
    config = PlivoConfig(AUTH_ID, AUTH_TOKEN, base_url="https://api.example.com/")
    url, headers, body = plivo.build_send_request(config, submission())
    assert url == f"https://api.example.com/v1/Account/{AUTH_ID}/Message/"
    assert headers == {
        "authorization": basic_auth(AUTH_ID, AUTH_TOKEN),
        "content-type": "application/json",
        "accept": "application/json",
    }
    assert msgspec.json.decode(body) == {
        "src": OWN_NUMBER,
        "dst": PEER,
        "text": "Hi there",
        "url": "https://gateway.example.com/hooks/plivo",
        "method": "POST",
    }


def test_read_send_response_success() -> None:
    assert plivo.read_send_response(202, sample("send_response.json")) == SendResult(
        SAMPLE_UUID, carrier_status="queued"
    )


@pytest.mark.parametrize("status_code", [400, 401, 404])
def test_read_send_response_refusal(status_code: int) -> None:
    with pytest.raises(CarrierPermanentError) as info:
        plivo.read_send_response(status_code, sample("error_invalid_dst.json"))
    assert info.value.error_code == str(status_code)


@pytest.mark.parametrize(
    ("status_code", "body"),
    [(429, b"{}"), (500, b"oops"), (503, b"{}"), (202, b"<html>"), (202, b'{"message_uuid": []}')],
)
def test_read_send_response_transient(status_code: int, body: bytes) -> None:
    with pytest.raises(CarrierTransientError):
        plivo.read_send_response(status_code, body)


async def test_send_translates_timeouts() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        carrier = plivo.from_config(
            PlivoConfig(AUTH_ID, AUTH_TOKEN), CarrierContext(http, "https://gw", SystemClock())
        )
        with pytest.raises(CarrierTransientError, match="ReadTimeout"):
            await carrier.send(submission(), timeout_s=1.0)


@pytest.mark.parametrize("missing", ["auth_id", "auth_token"])
async def test_from_config_requires_credentials(missing: str) -> None:
    config = msgspec.structs.replace(PlivoConfig(AUTH_ID, AUTH_TOKEN), **{missing: ""})
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigError, match=missing):
            plivo.from_config(config, CarrierContext(http, "https://gw", SystemClock()))


# End to end through the real server ------------------------------------------------------------


async def start(
    start_gateway: ServerFactory, api: FakeCarrierApi, *, accept_v2: bool = False, **kwargs: Any
) -> GatewayServer:
    section = {"auth_id": AUTH_ID, "auth_token": AUTH_TOKEN, "base_url": api.base_url,
               "accept_v2": accept_v2}  # fmt: skip
    return await start_gateway(carriers={"plivo": section}, **kwargs)


async def post_signed(
    server: GatewayServer, params: dict[str, str], *, token: str = AUTH_TOKEN, nonce: str = NONCE
) -> httpx.Response:
    url = server.url + "/hooks/plivo"
    signature = plivo.v3_signature(token, "POST", url, list(params.items()), nonce)
    headers = {"x-plivo-signature-v3": signature, "x-plivo-signature-v3-nonce": nonce}
    return await server.client.post("/hooks/plivo", data=params, headers=headers)


def status_params(uuid: str, status: str, sequence: int, error_code: str = "") -> dict[str, str]:
    params = dict(parse_qsl(sample("status_sent.txt").decode()))
    params |= {"MessageUUID": uuid, "ParentMessageUUID": uuid, "Status": status}
    params |= {"Sequence": str(sequence), "From": OWN_NUMBER[1:], "To": PEER[1:]}
    if error_code:
        params["ErrorCode"] = error_code
    return params


async def stored(server: GatewayServer, message_id: str) -> Message:
    message = await server.gateway.store.get_message(message_id)
    assert message is not None
    return message


async def carrier_message_id(server: GatewayServer, message_id: str) -> str:
    async with server.gateway.store.reading() as tx:
        row = await tx.one(
            "SELECT carrier_message_id FROM targets WHERE message_id = ?", (message_id,)
        )
    assert row is not None
    return str(row["carrier_message_id"])


def accepted_reply(uuid: str) -> Reply:
    return Reply(202, msgspec.json.encode({"api_id": "a1", "message": "message(s) queued",
                                           "message_uuid": [uuid]}))  # fmt: skip


async def sent_message(
    server: GatewayServer, api: FakeCarrierApi, tenant: Tenant, uuid: str, text: str = "hello"
) -> str:
    api.replies.append(accepted_reply(uuid))
    response = await server.send(tenant, [PEER], text)
    assert response.status_code == 200, response.text
    assert await server.gateway.dispatcher.run_once() == 1
    return str(response.json()["id"])


async def test_e2e_inbound_becomes_a_message_and_a_webhook(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    server = await start(start_gateway, fake_carrier_api)
    tenant = await server.add_tenant(OWN_NUMBER, customer_endpoint.url, carrier="plivo")
    params = dict(parse_qsl(sample("inbound.txt").decode(), keep_blank_values=True))
    response = await post_signed(server, params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert response.content == plivo.XML_EMPTY
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.direction.value, message.source.target, message.text) == (
        "inbound", PEER, "Hi from Plivo \u2713"
    )  # fmt: skip
    assert [(t.destination.target, t.status, t.carrier) for t in message.targets] == [
        (OWN_NUMBER, TargetStatus.RECEIVED, "plivo")
    ]
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id


async def test_e2e_inbound_by_get_with_legacy_v2(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False, accept_v2=True)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="plivo")
    query = sample("inbound_get_query.txt").decode()
    url = f"{server.url}/hooks/plivo?{query}"
    headers = {
        "x-plivo-signature-v2": plivo.v2_signature(AUTH_TOKEN, url, "987654"),
        "x-plivo-signature-v2-nonce": "987654",
    }
    response = await server.client.get(f"/hooks/plivo?{query}", headers=headers)
    assert response.status_code == 200
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.text, message.targets[0].parts) == ("A longer reply in two parts", 2)


async def test_e2e_send_reaches_plivo_with_the_documented_fields(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="plivo")
    message_id = await sent_message(server, fake_carrier_api, tenant, SAMPLE_UUID, "Hi there")
    [request] = fake_carrier_api.received
    assert (request.method, request.path) == ("POST", f"/v1/Account/{AUTH_ID}/Message/")
    assert request.headers["authorization"] == basic_auth(AUTH_ID, AUTH_TOKEN)
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "src": OWN_NUMBER,
        "dst": PEER,
        "text": "Hi there",
        "url": server.url + "/hooks/plivo",
        "method": "POST",
    }
    target = (await stored(server, message_id)).targets[0]
    assert (target.status, target.carrier_status) == (TargetStatus.SENT, "queued")
    assert await carrier_message_id(server, message_id) == SAMPLE_UUID


async def test_e2e_reports_move_sent_to_delivered_or_failed(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="plivo")
    good = await sent_message(server, fake_carrier_api, tenant, "uuid-good")
    bad = await sent_message(server, fake_carrier_api, tenant, "uuid-bad")
    assert (await post_signed(server, status_params("uuid-good", "delivered", 3))).is_success
    assert (await post_signed(server, status_params("uuid-bad", "undelivered", 3, "80"))).is_success
    delivered = (await stored(server, good)).targets[0]
    assert (delivered.status, delivered.carrier_status, delivered.error_code) == (
        TargetStatus.DELIVERED, "delivered", ""
    )  # fmt: skip
    failed = (await stored(server, bad)).targets[0]
    assert (failed.status, failed.carrier_status, failed.error_code) == (
        TargetStatus.FAILED, "undelivered", "80"
    )  # fmt: skip


async def test_e2e_duplicate_and_reordered_reports_change_nothing_twice(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, customer_endpoint.url, carrier="plivo")
    message_id = await sent_message(server, fake_carrier_api, tenant, SAMPLE_UUID)
    reports = [("delivered", 3), ("delivered", 3), ("sent", 2), ("queued", 1), ("failed", 4)]
    for status, sequence in reports:
        response = await post_signed(server, status_params(SAMPLE_UUID, status, sequence))
        assert response.status_code == 200
    target = (await stored(server, message_id)).targets[0]
    assert (target.status, target.carrier_status, target.error_code) == (
        TargetStatus.DELIVERED, "delivered", ""
    )  # fmt: skip
    assert await event_kinds(server, message_id) == [
        "message_created", "message_updated", "message_updated"
    ]  # fmt: skip


async def test_e2e_forged_and_unsigned_callbacks_are_403_and_store_nothing(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="plivo")
    message_id = await sent_message(server, fake_carrier_api, tenant, SAMPLE_UUID)
    params = dict(parse_qsl(sample("inbound.txt").decode(), keep_blank_values=True))
    url = server.url + "/hooks/plivo"
    signature = plivo.v3_signature(AUTH_TOKEN, "POST", url, list(params.items()), NONCE)
    signed = {"x-plivo-signature-v3": signature, "x-plivo-signature-v3-nonce": NONCE}
    forged = [
        await post_signed(server, params, token="not-the-token"),
        await server.client.post("/hooks/plivo", data=params | {"Text": "x"}, headers=signed),
        await server.client.post(
            "/hooks/plivo", data=params, headers=signed | {"x-plivo-signature-v3-nonce": "1"}
        ),
        await server.client.post("/hooks/plivo", data=params),
        await server.client.post(
            "/hooks/plivo", data=params, headers={"x-plivo-signature-v2": "garbage"}
        ),
        await post_signed(server, status_params(SAMPLE_UUID, "delivered", 3), token="nope"),
    ]
    for response in forged:
        assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    messages = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert [m.id for m in messages] == [message_id]
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.SENT
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    assert (await post_signed(server, params)).status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 2


async def test_e2e_refusal_fails_the_target_and_outage_is_retried(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    clock = ManualClock()
    server = await start(
        start_gateway, fake_carrier_api, clock=clock, run_workers=False,
        dispatch={"retry_delays_s": [5]},
    )  # fmt: skip
    tenant = await server.add_tenant(OWN_NUMBER, carrier="plivo")
    fake_carrier_api.replies.append(Reply(400, sample("error_invalid_dst.json")))
    refused = (await server.send(tenant, [PEER])).json()["id"]
    await server.gateway.dispatcher.run_once()
    target = (await stored(server, refused)).targets[0]
    assert (target.status, target.error_code) == (TargetStatus.FAILED, "400")
    fake_carrier_api.replies.extend([Reply(503, b"down", "text/plain"), accepted_reply("u-2")])
    retried = (await server.send(tenant, [PEER])).json()["id"]
    assert await server.gateway.dispatcher.run_once() == 1
    assert (await stored(server, retried)).targets[0].status is TargetStatus.QUEUED
    clock.advance(5)
    assert await server.gateway.dispatcher.run_once() == 1
    assert (await stored(server, retried)).targets[0].status is TargetStatus.SENT


def test_v2_is_refused_unless_turned_on() -> None:
    case = V2_CASES[0]
    headers = {
        "x-plivo-signature-v2": case["signature"],
        "x-plivo-signature-v2-nonce": case["nonce"],
    }
    request = CallbackRequest("POST", case["url"], headers, {}, b"")
    with pytest.raises(InvalidSignature, match="V2 is not accepted"):
        plivo.verify_request(case["auth_token"], request)
    plivo.verify_request(case["auth_token"], request, accept_v2=True)
