"""Twilio: published signature vectors, recorded callbacks, the Messages API shape, end to end."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import msgspec
import pytest

from gateway.carriers import twilio
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
from gateway.config import TwilioConfig
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

SAMPLES = Path(__file__).parent / "samples" / "twilio"
VECTORS: dict[str, Any] = msgspec.json.decode(
    (SHARED / "spec" / "vectors" / "twilio.json").read_bytes()
)
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"
AUTH_TOKEN = "test-twilio-auth-token"
OWN_NUMBER = "+15557654321"
PEER = "+15551234567"
SAMPLE_SID = "SM5a8b2c9d6e1f4a3b7c0d9e8f1a2b3c4d"
SHARED_KEY = "test-webhooks-shared-key-secret"
SHA256_SETTINGS = "key=webhooks_sharedkey_0123456789abcdef,algorithm=HMAC_SHA256"


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def form_request(url: str, params: list[tuple[str, str]], signature: str | None) -> CallbackRequest:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers[twilio.SIGNATURE_HEADER] = signature
    query = dict(parse_qsl(url.partition("?")[2]))
    return CallbackRequest("POST", url, headers, query, urlencode(params).encode())


def sample_request(name: str, method: str = "POST") -> CallbackRequest:
    url = "https://gateway.example.com/hooks/twilio"
    if method == "GET":
        text = sample(name).decode()
        return CallbackRequest("GET", f"{url}?{text}", {}, dict(parse_qsl(text)), b"")
    return CallbackRequest("POST", url, {}, {}, sample(name))


@pytest.fixture
async def carrier() -> AsyncIterator[twilio.TwilioCarrier]:
    async with httpx.AsyncClient() as http:
        context = CarrierContext(http, "https://gateway.example.com", SystemClock())
        config = TwilioConfig(account_sid=ACCOUNT_SID, auth_token=VECTORS["auth_token"])
        yield twilio.from_config(config, context)


# Published vectors ----------------------------------------------------------------------------

SIGNATURE_CASES = VECTORS["signature_cases"]
ACCEPTANCE_CASES = VECTORS["acceptance_cases"]


def case_request(case: dict[str, Any], signature: str) -> CallbackRequest:
    if "body" in case:
        url, body = case["url"], case["body"].encode()
        headers = {"content-type": "application/json", twilio.SIGNATURE_HEADER: signature}
        return CallbackRequest("POST", url, headers, dict(parse_qsl(url.partition("?")[2])), body)
    params = [(name, value) for name, value in case["params"]]
    return form_request(case.get("url") or case["request_url"], params, signature)


@pytest.mark.parametrize("case", SIGNATURE_CASES, ids=[c["name"] for c in SIGNATURE_CASES])
def test_signature_vectors_verify(case: dict[str, Any], carrier: twilio.TwilioCarrier) -> None:
    params = [(name, value) for name, value in case["params"]]
    assert twilio.string_to_sign(case["url"], params) == case["string_to_sign"]
    assert twilio.signature(VECTORS["auth_token"], case["url"], params) == case["signature"]
    carrier.verify(case_request(case, case["signature"]), now_s=0)


@pytest.mark.parametrize("case", SIGNATURE_CASES, ids=[c["name"] for c in SIGNATURE_CASES])
def test_signature_vectors_refuse_a_changed_request(
    case: dict[str, Any], carrier: twilio.TwilioCarrier
) -> None:
    if "body" in case:
        changed = case | {"body": case["body"].replace("value", "other")}
    else:
        changed = case | {"params": [*case["params"], ["Extra", "1"]]}
    with pytest.raises(InvalidSignature):
        carrier.verify(case_request(changed, case["signature"]), now_s=0)
    flipped = ("A" if case["signature"][0] != "A" else "B") + case["signature"][1:]
    with pytest.raises(InvalidSignature):
        carrier.verify(case_request(case, flipped), now_s=0)


@pytest.mark.parametrize("case", ACCEPTANCE_CASES, ids=[c["name"] for c in ACCEPTANCE_CASES])
def test_port_variants_are_accepted(case: dict[str, Any], carrier: twilio.TwilioCarrier) -> None:
    assert case["valid"] is True
    carrier.verify(case_request(case, case["x_twilio_signature"]), now_s=0)


def test_another_token_does_not_verify() -> None:
    case = SIGNATURE_CASES[0]
    with pytest.raises(InvalidSignature, match="does not match"):
        twilio.verify_request("54321", case_request(case, case["signature"]))


def test_a_non_default_port_is_not_swapped_for_another() -> None:
    # Signed for :1234; the request arrived on :4321. Only "as is", "no port", "default port".
    case = SIGNATURE_CASES[3]
    moved = case | {"url": case["url"].replace(":1234", ":4321")}
    with pytest.raises(InvalidSignature):
        twilio.verify_request(VECTORS["auth_token"], case_request(moved, case["signature"]))


@pytest.mark.parametrize("header", [None, "", "not-base64!", "RSOYDt4T1cUTdK1PDd93/VVr8B8"])
def test_missing_or_malformed_signature_is_refused(header: str | None) -> None:
    case = SIGNATURE_CASES[0]
    request = form_request(case["url"], [tuple(p) for p in case["params"]], header)
    with pytest.raises(InvalidSignature):
        twilio.verify_request(VECTORS["auth_token"], request)


def test_a_get_callback_signs_the_url_with_its_query() -> None:
    url = "https://gateway.example.com/hooks/twilio?" + sample("inbound_get_query.txt").decode()
    request = CallbackRequest(
        "GET", url, {twilio.SIGNATURE_HEADER: twilio.signature(AUTH_TOKEN, url, [])}, {}, b""
    )
    twilio.verify_request(AUTH_TOKEN, request)
    with pytest.raises(InvalidSignature):
        twilio.verify_request(AUTH_TOKEN, msgspec.structs.replace(request, url=url + "&x=1"))


# SharedKey ("Webhooks Rules") signatures ------------------------------------------------------


def sha256_signature(key: str, url: str, params: list[tuple[str, str]]) -> str:
    """Computed independently, as twilio-python 9.x RequestValidator(key).compute_signature(
    url, params, algorithm="HMAC_SHA256"): URL + each name (sorted) + its sorted unique values."""
    text = url
    for name in sorted({n for n, _ in params}):
        for value in sorted({v for n, v in params if n == name}):
            text += name + value
    digest = hmac.new(key.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("utf-8")


def shared_key_carrier(http: httpx.AsyncClient, key: str = SHARED_KEY) -> twilio.TwilioCarrier:
    config = TwilioConfig(ACCOUNT_SID, AUTH_TOKEN, webhook_shared_key=key)
    return twilio.from_config(config, CarrierContext(http, "https://gw", SystemClock()))


def with_settings(request: CallbackRequest, settings: str | None) -> CallbackRequest:
    headers = dict(request.headers)
    if settings is not None:
        headers[twilio.SETTINGS_HEADER] = settings
    return msgspec.structs.replace(request, headers=headers)


def shared_key_request(
    signed_url: str, params: list[tuple[str, str]], key: str = SHARED_KEY, url: str = ""
) -> CallbackRequest:
    request = form_request(url or signed_url, params, sha256_signature(key, signed_url, params))
    return with_settings(request, SHA256_SETTINGS)


REPEATED = [("To", "+15557654321"), ("Body", "b"), ("Body", "a"), ("Body", "a"), ("From", "+1")]


async def test_a_shared_key_signature_is_accepted() -> None:
    url = "https://gateway.example.com/hooks/twilio?x=1"
    async with httpx.AsyncClient() as http:
        carrier = shared_key_carrier(http)
        carrier.verify(shared_key_request(url, REPEATED), now_s=0)
        # Port variants: signed with the default port, received without it, and the reverse.
        plain = "https://gateway.example.com/hooks/twilio"
        with_port = "https://gateway.example.com:443/hooks/twilio"
        carrier.verify(shared_key_request(with_port, REPEATED, url=plain), now_s=0)
        carrier.verify(shared_key_request(plain, REPEATED, url=with_port), now_s=0)
        # The settings header's algorithm name is read as twilio-python does (trimmed, any case).
        request = shared_key_request(url, REPEATED)
        carrier.verify(with_settings(request, " key=k , algorithm = hmac_sha256 "), now_s=0)


async def test_a_shared_key_signature_over_a_json_body() -> None:
    body = b'{"MessageSid":"SM1","MessageStatus":"delivered"}'
    url = f"https://gateway.example.com/hooks/twilio?bodySHA256={hashlib.sha256(body).hexdigest()}"
    headers = {
        twilio.SIGNATURE_HEADER: sha256_signature(SHARED_KEY, url, []),
        twilio.SETTINGS_HEADER: SHA256_SETTINGS,
    }
    request = CallbackRequest("POST", url, headers, dict(parse_qsl(url.partition("?")[2])), body)
    async with httpx.AsyncClient() as http:
        carrier = shared_key_carrier(http)
        carrier.verify(request, now_s=0)
        with pytest.raises(InvalidSignature, match="bodySHA256"):
            carrier.verify(msgspec.structs.replace(request, body=body + b" "), now_s=0)


async def test_shared_key_mismatches_are_refused() -> None:
    url = "https://gateway.example.com/hooks/twilio"
    sha1 = form_request(url, REPEATED, twilio.signature(AUTH_TOKEN, url, REPEATED))
    signed_for_more = shared_key_request(url, [*REPEATED, ("Extra", "1")])
    refused = [
        shared_key_request(url, REPEATED, key="wrong-key"),
        msgspec.structs.replace(signed_for_more, body=urlencode(REPEATED).encode()),
        # The auth token's SHA-1 signature does not pass where SHA-256 is announced ...
        with_settings(sha1, SHA256_SETTINGS),
        # ... nor the auth token under SHA-256, nor the SharedKey's SHA-256 without the header.
        with_settings(
            form_request(url, REPEATED, sha256_signature(AUTH_TOKEN, url, REPEATED)),
            SHA256_SETTINGS,
        ),
        form_request(url, REPEATED, sha256_signature(SHARED_KEY, url, REPEATED)),
    ]
    async with httpx.AsyncClient() as http:
        carrier = shared_key_carrier(http)
        for request in refused:
            with pytest.raises(InvalidSignature) as info:
                carrier.verify(request, now_s=0)
            assert SHARED_KEY not in str(info.value) and AUTH_TOKEN not in str(info.value)


async def test_sha256_without_a_configured_shared_key_is_refused(
    carrier: twilio.TwilioCarrier,
) -> None:
    url = "https://gateway.example.com/hooks/twilio"
    for key in (SHARED_KEY, "", VECTORS["auth_token"]):
        with pytest.raises(InvalidSignature, match="webhook_shared_key"):
            carrier.verify(shared_key_request(url, REPEATED, key=key), now_s=0)


@pytest.mark.parametrize(
    "settings", ["key=k,algorithm=HMAC_SHA512", "algorithm=RSA_SHA256", "algorithm=HMAC_SHA256x"]
)
async def test_an_unknown_algorithm_is_refused(settings: str) -> None:
    url = "https://gateway.example.com/hooks/twilio"
    signature = sha256_signature(SHARED_KEY, url, REPEATED)
    async with httpx.AsyncClient() as http:
        carrier = shared_key_carrier(http)
        with pytest.raises(InvalidSignature, match="unknown algorithm"):
            carrier.verify(with_settings(form_request(url, REPEATED, signature), settings), 0)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (None, AUTH_TOKEN),  # today's signature, unchanged
        ("key=k", AUTH_TOKEN),  # no algorithm named: HMAC_SHA1, as twilio-python reads it
        ("key=k,algorithm=HMAC_SHA1", AUTH_TOKEN),
        ("key=k,algorithm=HMAC_SHA1", SHARED_KEY),  # a SharedKey announced with SHA-1
    ],
)
async def test_sha1_signatures_still_verify(settings: str | None, key: str) -> None:
    url = "https://gateway.example.com/hooks/twilio"
    request = form_request(url, REPEATED, twilio.signature(key, url, REPEATED))
    async with httpx.AsyncClient() as http:
        shared_key_carrier(http).verify(with_settings(request, settings), now_s=0)


async def test_a_shared_key_sha1_signature_needs_the_header() -> None:
    url = "https://gateway.example.com/hooks/twilio"
    request = form_request(url, REPEATED, twilio.signature(SHARED_KEY, url, REPEATED))
    async with httpx.AsyncClient() as http:
        with pytest.raises(InvalidSignature, match="does not match"):
            shared_key_carrier(http).verify(request, now_s=0)


def test_the_adapter_signs_sha256_as_twilio_python_does() -> None:
    url = "https://gateway.example.com/hooks/twilio"
    expected = sha256_signature(SHARED_KEY, url, REPEATED)
    assert twilio.signature(SHARED_KEY, url, REPEATED, twilio.HMAC_SHA256) == expected
    assert expected != twilio.signature(SHARED_KEY, url, REPEATED)


# Parsing recorded callbacks ---------------------------------------------------------------------


def test_parse_inbound_form() -> None:
    sid = "SM1f0e8ae6ade43cb3c0ce4525424e404f"
    sms = InboundSms(sid, PEER, OWN_NUMBER, "Hello from Twilio \U0001f44b", parts=1)
    assert twilio.parse_callback(sample_request("inbound.txt")) == Callback(sid, sms)


def test_parse_inbound_get_query() -> None:
    sid = "SM2e0e8ae6ade43cb3c0ce4525424e404f"
    sms = InboundSms(sid, PEER, OWN_NUMBER, "Two part message", parts=2)
    assert twilio.parse_callback(sample_request("inbound_get_query.txt", "GET")) == Callback(
        sid, sms
    )


@pytest.mark.parametrize(
    ("name", "status", "raw", "error_code"),
    [
        ("status_sent.txt", TargetStatus.SENT, "sent", ""),
        ("status_delivered.txt", TargetStatus.DELIVERED, "delivered", ""),
        ("status_undelivered.txt", TargetStatus.FAILED, "undelivered", "30003"),
        ("status_failed.txt", TargetStatus.FAILED, "failed", "30001"),
        ("status_read.txt", TargetStatus.DELIVERED, "read", ""),
    ],
)
def test_parse_status_callbacks(name: str, status: TargetStatus, raw: str, error_code: str) -> None:
    report = DeliveryReport(SAMPLE_SID, status, raw, error_code)
    expected = Callback(f"{SAMPLE_SID}:{raw}", report)
    assert twilio.parse_callback(sample_request(name)) == expected


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("accepted", TargetStatus.SENT),
        ("scheduled", TargetStatus.SENT),
        ("queued", TargetStatus.SENT),
        ("sending", TargetStatus.SENT),
        ("sent", TargetStatus.SENT),
        ("delivered", TargetStatus.DELIVERED),
        ("read", TargetStatus.DELIVERED),
        ("undelivered", TargetStatus.FAILED),
        ("failed", TargetStatus.FAILED),
        ("partially_delivered", TargetStatus.FAILED),
        ("canceled", TargetStatus.FAILED),
    ],
)
def test_status_mapping(raw: str, status: TargetStatus) -> None:
    body = urlencode({"MessageSid": SAMPLE_SID, "MessageStatus": raw, "SmsStatus": raw})
    request = CallbackRequest("POST", "https://gw/hooks/twilio", {}, {}, body.encode())
    event = twilio.parse_callback(request).event
    assert isinstance(event, DeliveryReport)
    assert (event.status, event.carrier_status) == (status, raw)


def test_untracked_status_is_ignored() -> None:
    body = urlencode({"MessageSid": SAMPLE_SID, "MessageStatus": "receiving"}).encode()
    request = CallbackRequest("POST", "https://gw/hooks/twilio", {}, {}, body)
    assert twilio.parse_callback(request) == Callback(
        f"{SAMPLE_SID}:receiving", Ignored("Twilio status 'receiving' is not tracked")
    )


@pytest.mark.parametrize(
    ("body", "query"),
    [
        (b"MessageStatus=delivered", {}),  # no MessageSid
        (b"MessageSid=SM1&From=%2B1&To=%2B2&NumSegments=many", {}),
        (b"From=%2B1&To=%2B2&Body=hi", {}),  # inbound without MessageSid
        (b"\xff\xfe", {}),
        (b'{"MessageSid": "SM1"}', {"bodySHA256": "abc"}),
    ],
)
def test_malformed_callbacks(body: bytes, query: dict[str, str]) -> None:
    request = CallbackRequest("POST", "https://gw/hooks/twilio", {}, query, body)
    with pytest.raises(MalformedCallback):
        twilio.parse_callback(request)


# Send -----------------------------------------------------------------------------------------


def submission() -> Submission:
    return Submission(
        source=OWN_NUMBER,
        destination=PEER,
        text="Hi there & more",
        status_callback_url="https://gateway.example.com/hooks/twilio",
        reference="msg-1:0",
    )


def test_build_send_request_with_a_from_number() -> None:
    config = TwilioConfig(ACCOUNT_SID, AUTH_TOKEN, base_url="https://api.example.com/")
    url, headers, body = twilio.build_send_request(config, submission())
    assert url == f"https://api.example.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert headers == {
        "authorization": basic_auth(ACCOUNT_SID, AUTH_TOKEN),
        "content-type": "application/x-www-form-urlencoded",
        "accept": "application/json",
    }
    assert parse_qsl(body.decode(), strict_parsing=True) == [
        ("To", PEER),
        ("From", OWN_NUMBER),
        ("Body", "Hi there & more"),
        ("StatusCallback", "https://gateway.example.com/hooks/twilio"),
    ]


def test_build_send_request_through_a_messaging_service() -> None:
    config = TwilioConfig(ACCOUNT_SID, AUTH_TOKEN, messaging_service_sid="MG123")
    url, _, body = twilio.build_send_request(config, submission())
    assert url.startswith("https://api.twilio.com/2010-04-01/Accounts/")
    fields = dict(parse_qsl(body.decode()))
    assert fields["MessagingServiceSid"] == "MG123"
    assert "From" not in fields


def test_read_send_response_success() -> None:
    assert twilio.read_send_response(201, sample("send_response.json")) == SendResult(
        SAMPLE_SID, parts=1, carrier_status="queued"
    )
    # "0" segments: a Messaging Service has not picked a sender yet; the count is unknown.
    assert twilio.read_send_response(201, sample("send_response_service.json")) == SendResult(
        "SM6b9c3d0e7f2a5b4c8d1e0f9a2b3c4d5e", parts=None, carrier_status="accepted"
    )


def test_read_send_response_refusal_keeps_twilio_code() -> None:
    with pytest.raises(CarrierPermanentError) as info:
        twilio.read_send_response(400, sample("error_invalid_to.json"))
    assert info.value.error_code == "21211"
    with pytest.raises(CarrierPermanentError) as info:
        twilio.read_send_response(401, b"<html>nope</html>")
    assert info.value.error_code == "401"


@pytest.mark.parametrize(
    ("status_code", "body"),
    [
        (429, sample("error_too_many_requests.json")),
        (500, b"{}"),
        (503, b"Service Unavailable"),
        (201, b"<html>"),  # an unreadable success
    ],
)
def test_read_send_response_transient(status_code: int, body: bytes) -> None:
    with pytest.raises(CarrierTransientError):
        twilio.read_send_response(status_code, body)


async def test_send_translates_network_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        config = TwilioConfig(ACCOUNT_SID, AUTH_TOKEN)
        carrier = twilio.from_config(config, CarrierContext(http, "https://gw", SystemClock()))
        with pytest.raises(CarrierTransientError, match="ConnectError"):
            await carrier.send(submission(), timeout_s=1.0)


@pytest.mark.parametrize("missing", ["account_sid", "auth_token"])
async def test_from_config_requires_credentials(missing: str) -> None:
    config = msgspec.structs.replace(TwilioConfig(ACCOUNT_SID, AUTH_TOKEN), **{missing: ""})
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigError, match=missing):
            twilio.from_config(config, CarrierContext(http, "https://gw", SystemClock()))


# End to end through the real server ------------------------------------------------------------


async def start(start_gateway: ServerFactory, api: FakeCarrierApi, **kwargs: Any) -> GatewayServer:
    section = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "base_url": api.base_url}
    return await start_gateway(carriers={"twilio": section}, **kwargs)


async def post_signed(
    server: GatewayServer,
    params: dict[str, str],
    *,
    token: str = AUTH_TOKEN,
    signed_url: str | None = None,
) -> httpx.Response:
    url = server.url + "/hooks/twilio"
    signature = twilio.signature(token, signed_url or url, params.items())
    headers = {twilio.SIGNATURE_HEADER: signature}
    return await server.client.post("/hooks/twilio", data=params, headers=headers)


def status_params(sid: str, status: str, error_code: str = "") -> dict[str, str]:
    params = {
        "MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
        "AccountSid": ACCOUNT_SID, "From": OWN_NUMBER, "To": PEER, "ApiVersion": "2010-04-01",
    }  # fmt: skip
    if error_code:
        params["ErrorCode"] = error_code
    return params


def inbound_params(sid: str = "SM1f0e8ae6ade43cb3c0ce4525424e404f") -> dict[str, str]:
    return dict(parse_qsl(sample("inbound.txt").decode())) | {"MessageSid": sid}


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


def accepted_reply(sid: str) -> Reply:
    resource = msgspec.json.decode(sample("send_response.json"))
    return Reply(201, msgspec.json.encode(resource | {"sid": sid}))


async def sent_message(
    server: GatewayServer, api: FakeCarrierApi, tenant: Tenant, sid: str, text: str = "hello"
) -> str:
    """Send one SMS through the API and dispatch it; the fake Twilio accepts it as `sid`."""
    api.replies.append(accepted_reply(sid))
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
    tenant = await server.add_tenant(OWN_NUMBER, customer_endpoint.url, carrier="twilio")
    response = await post_signed(server, inbound_params())
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.content == twilio.TWIML_EMPTY
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.direction.value, message.source.target, message.text) == (
        "inbound", PEER, "Hello from Twilio \U0001f44b"
    )  # fmt: skip
    assert [(t.destination.target, t.status, t.carrier) for t in message.targets] == [
        (OWN_NUMBER, TargetStatus.RECEIVED, "twilio")
    ]
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id


async def test_e2e_inbound_by_get(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    query = sample("inbound_get_query.txt").decode()
    signature = twilio.signature(AUTH_TOKEN, f"{server.url}/hooks/twilio?{query}", [])
    response = await server.client.get(
        f"/hooks/twilio?{query}", headers={twilio.SIGNATURE_HEADER: signature}
    )
    assert response.status_code == 200
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.text, message.targets[0].parts) == ("Two part message", 2)


async def test_e2e_send_reaches_twilio_with_the_documented_fields(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    message_id = await sent_message(server, fake_carrier_api, tenant, SAMPLE_SID, "Hi there")
    [request] = fake_carrier_api.received
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert request.headers["authorization"] == basic_auth(ACCOUNT_SID, AUTH_TOKEN)
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.body.decode(), strict_parsing=True)) == {
        "To": PEER,
        "From": OWN_NUMBER,
        "Body": "Hi there",
        "StatusCallback": server.url + "/hooks/twilio",
    }
    target = (await stored(server, message_id)).targets[0]
    assert (target.status, target.carrier_status, target.parts) == (TargetStatus.SENT, "queued", 1)
    assert await carrier_message_id(server, message_id) == SAMPLE_SID


async def test_e2e_reports_move_sent_to_delivered_or_failed(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    good = await sent_message(server, fake_carrier_api, tenant, "SM" + "a" * 32)
    bad = await sent_message(server, fake_carrier_api, tenant, "SM" + "b" * 32)
    assert (await post_signed(server, status_params("SM" + "a" * 32, "delivered"))).is_success
    undelivered = status_params("SM" + "b" * 32, "undelivered", "30003")
    assert (await post_signed(server, undelivered)).is_success
    delivered = (await stored(server, good)).targets[0]
    assert (delivered.status, delivered.carrier_status, delivered.error_code) == (
        TargetStatus.DELIVERED, "delivered", ""
    )  # fmt: skip
    failed = (await stored(server, bad)).targets[0]
    assert (failed.status, failed.carrier_status, failed.error_code) == (
        TargetStatus.FAILED, "undelivered", "30003"
    )  # fmt: skip


async def test_e2e_duplicate_and_reordered_reports_change_nothing_twice(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    customer_endpoint: CustomerEndpoint,
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, customer_endpoint.url, carrier="twilio")
    message_id = await sent_message(server, fake_carrier_api, tenant, SAMPLE_SID)
    for status in ("delivered", "delivered", "sent", "sending", "undelivered", "delivered"):
        error_code = "30003" if status == "undelivered" else ""
        response = await post_signed(server, status_params(SAMPLE_SID, status, error_code))
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
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    message_id = await sent_message(server, fake_carrier_api, tenant, SAMPLE_SID)
    params = inbound_params()
    url = server.url + "/hooks/twilio"
    signature = twilio.signature(AUTH_TOKEN, url, params.items())
    tampered = params | {"Body": "send money"}
    forged = [
        await post_signed(server, params, token="not-the-token"),
        await post_signed(server, params, signed_url="https://elsewhere.example/hooks/twilio"),
        await server.client.post(
            "/hooks/twilio", data=tampered, headers={twilio.SIGNATURE_HEADER: signature}
        ),
        await server.client.post("/hooks/twilio", data=params),
        await server.client.post(
            "/hooks/twilio", data=params, headers={twilio.SIGNATURE_HEADER: "garbage"}
        ),
        await post_signed(server, status_params(SAMPLE_SID, "delivered"), token="nope"),
    ]
    # A replay of a signed JSON body under a different body: the bodySHA256 no longer matches.
    body_url = f"{url}?bodySHA256={'0' * 64}"
    json_signature = twilio.signature(AUTH_TOKEN, body_url, [])
    forged.append(
        await server.client.post(
            f"/hooks/twilio?bodySHA256={'0' * 64}",
            content=b'{"MessageSid": "SM1"}',
            headers={twilio.SIGNATURE_HEADER: json_signature},
        )
    )
    for response in forged:
        assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    messages = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert [m.id for m in messages] == [message_id]  # only the outbound one
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.SENT
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    # The forgeries consumed no idempotency key: the genuine callback still counts.
    assert (await post_signed(server, params)).status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 2


@pytest.mark.parametrize(
    ("configured", "expected"),
    [(None, 403), ("another-shared-key", 403), (SHARED_KEY, 200)],
    ids=["no-key-configured", "wrong-key", "right-key"],
)
async def test_e2e_shared_key_signed_inbound(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    configured: str | None,
    expected: int,
) -> None:
    section = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN}
    if configured is not None:
        section["webhook_shared_key"] = configured
    server = await start_gateway(
        carriers={"twilio": section | {"base_url": fake_carrier_api.base_url}}, run_workers=False
    )
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    params = inbound_params()
    signature = sha256_signature(SHARED_KEY, server.url + "/hooks/twilio", list(params.items()))
    headers = {twilio.SIGNATURE_HEADER: signature, twilio.SETTINGS_HEADER: SHA256_SETTINGS}
    response = await server.client.post("/hooks/twilio", data=params, headers=headers)
    messages = await server.gateway.store.list_messages(tenant.id, 10, None)
    if expected == 403:
        assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
        assert SHARED_KEY not in response.text and AUTH_TOKEN not in response.text
        assert messages == []
    else:
        assert response.status_code == 200
        assert [(m.direction.value, m.text) for m in messages] == [
            ("inbound", "Hello from Twilio \U0001f44b")
        ]


async def test_e2e_permanent_refusal_fails_the_target_with_twilio_code(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi
) -> None:
    server = await start(start_gateway, fake_carrier_api, run_workers=False)
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    fake_carrier_api.replies.append(Reply(400, sample("error_invalid_to.json")))
    message_id = (await server.send(tenant, [PEER])).json()["id"]
    await server.gateway.dispatcher.run_once()
    target = (await stored(server, message_id)).targets[0]
    assert (target.status, target.error_code) == (TargetStatus.FAILED, "21211")
    assert len(fake_carrier_api.received) == 1


@pytest.mark.parametrize(
    "reply",
    [Reply(429, sample("error_too_many_requests.json")), Reply(503, b"unavailable", "text/plain")],
    ids=["429", "503"],
)
async def test_e2e_throttling_or_outage_is_retried_later(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, reply: Reply
) -> None:
    clock = ManualClock()
    server = await start(
        start_gateway, fake_carrier_api, clock=clock, run_workers=False,
        dispatch={"retry_delays_s": [5]},
    )  # fmt: skip
    tenant = await server.add_tenant(OWN_NUMBER, carrier="twilio")
    fake_carrier_api.replies.extend([reply, accepted_reply(SAMPLE_SID)])
    message_id = (await server.send(tenant, [PEER])).json()["id"]
    assert await server.gateway.dispatcher.run_once() == 1
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.QUEUED
    assert await server.gateway.dispatcher.run_once() == 0  # not before the backoff
    clock.advance(5)
    assert await server.gateway.dispatcher.run_once() == 1
    assert (await stored(server, message_id)).targets[0].status is TargetStatus.SENT
    assert len(fake_carrier_api.received) == 2
