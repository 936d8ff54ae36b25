"""Vonage (legacy SMS API): signature vectors, recorded payloads, the send API, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import msgspec
import pytest

from gateway.carriers import vonage
from gateway.carriers.base import (
    Callback,
    CallbackRequest,
    CarrierContext,
    Concat,
    DeliveryReport,
    Ignored,
    InboundSms,
    SendResult,
    Submission,
)
from gateway.carriers.vonage import VonageCarrier
from gateway.clock import ManualClock
from gateway.config import VonageConfig
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
    event_kinds,
)
from tests.test_api_messages import assert_error

SAMPLES = Path(__file__).resolve().parent / "samples" / "vonage"
VECTORS = msgspec.json.decode((SHARED / "spec" / "vectors" / "vonage.json").read_bytes())
SECRET = "test-vonage-signature-secret"
PUBLIC_URL = "https://gw.example.com"
METHODS = ["md5hash", "md5", "sha1", "sha256", "sha512"]
S = TargetStatus


def config(**overrides: str) -> VonageConfig:
    values = {"api_key": "key", "api_secret": "api-secret", "signature_secret": SECRET}
    return msgspec.convert(values | overrides, VonageConfig)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no network in unit tests", request=request)


def carrier(transport: httpx.MockTransport | None = None, **overrides: str) -> VonageCarrier:
    http = httpx.AsyncClient(transport=transport or httpx.MockTransport(refuse))
    context = CarrierContext(http=http, public_url=PUBLIC_URL, clock=ManualClock())
    return vonage.from_config(config(**overrides), context)


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def sample_params(name: str) -> dict[str, str]:
    if name.endswith(".json"):
        return {key: str(value) for key, value in json.loads(sample(name)).items()}
    return dict(parse_qsl(sample(name).decode(), keep_blank_values=True))


def signed(
    params: dict[str, str], now_s: float, *, secret: str = SECRET, method: str = "md5hash"
) -> dict[str, str]:
    """The parameters as Vonage sends them signed: with timestamp, nonce and sig."""
    stamped = params | {"timestamp": str(int(now_s)), "nonce": "6ee4d8a1-2c0b-4a58"}
    return stamped | {"sig": vonage.signature(stamped, secret, method)}


JSON = {"content-type": "application/json; charset=utf-8"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def get_request(params: dict[str, str]) -> CallbackRequest:
    query = urlencode(params)
    return CallbackRequest("GET", f"{PUBLIC_URL}/hooks/vonage?{query}", {}, params, b"")


def form_request(params: dict[str, str]) -> CallbackRequest:
    return CallbackRequest(
        "POST", f"{PUBLIC_URL}/hooks/vonage", FORM, {}, urlencode(params).encode()
    )


def json_request(params: dict[str, str]) -> CallbackRequest:
    return CallbackRequest(
        "POST", f"{PUBLIC_URL}/hooks/vonage", JSON, {}, json.dumps(params).encode()
    )


REQUESTS = {"get": get_request, "form": form_request, "json": json_request}


# Signature vectors ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["sms_api_cases"], ids=lambda case: case["name"])
def test_published_vectors_verify(case: dict[str, Any]) -> None:
    params = {key: str(value) for key, value in case["params"].items()}
    assert vonage.signing_string(params) == case["string_to_sign"]
    assert vonage.signature(params, case["signature_secret"], case["method"]) == case["sig"]
    adapter = carrier(signature_secret=case["signature_secret"], signature_method=case["method"])
    now_s = float(params["timestamp"])  # the clock frozen at the vector's signing time
    adapter.verify(get_request(params | {"sig": case["sig"]}), now_s)
    adapter.verify(get_request(params | {"sig": case["sig"].upper()}), now_s)
    # As POST-JSON, where a number stays a number: signed as its decimal text.
    body = json.dumps(case["params"] | {"sig": case["sig"]}).encode()
    adapter.verify(CallbackRequest("POST", f"{PUBLIC_URL}/hooks/vonage", JSON, {}, body), now_s)


@pytest.mark.parametrize("case", VECTORS["sms_api_cases"], ids=lambda case: case["name"])
def test_published_vectors_refuse_any_change(case: dict[str, Any]) -> None:
    params = {key: str(value) for key, value in case["params"].items()}
    now_s = float(params["timestamp"])
    adapter = carrier(signature_secret=case["signature_secret"], signature_method=case["method"])
    flipped = ("0" if case["sig"][0] != "0" else "1") + case["sig"][1:]
    first_key = sorted(params)[0]
    forgeries = [
        params | {"sig": flipped},
        params | {first_key: params[first_key] + "x", "sig": case["sig"]},
        params | {"extra": "1", "sig": case["sig"]},
        params,  # unsigned
    ]
    for forged in forgeries:
        with pytest.raises(InvalidSignature):
            adapter.verify(get_request(forged), now_s)
    other = carrier(signature_secret="another-secret", signature_method=case["method"])
    with pytest.raises(InvalidSignature):
        other.verify(get_request(params | {"sig": case["sig"]}), now_s)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("how", list(REQUESTS))
def test_every_method_verifies_every_transport(method: str, how: str) -> None:
    params = signed(sample_params("inbound-post.json"), 1_700_000_000, method=method)
    carrier(signature_method=method).verify(REQUESTS[how](params), 1_700_000_000)
    with pytest.raises(InvalidSignature, match="does not match"):
        carrier(signature_method=method).verify(
            REQUESTS[how](params | {"text": "x"}), 1_700_000_000
        )


def test_another_method_than_configured_is_refused() -> None:
    params = signed(sample_params("inbound-get.txt"), 1_700_000_000, method="sha256")
    with pytest.raises(InvalidSignature):
        carrier(signature_method="sha512").verify(get_request(params), 1_700_000_000)


@pytest.mark.parametrize(
    ("skew_s", "fresh"),
    [(0, True), (300, True), (-300, True), (-301, False), (86400, True), (90000, True),
     (90001, False), (10**9, False)],
)  # fmt: skip
def test_timestamp_is_bounded_to_vonages_retry_window(skew_s: int, fresh: bool) -> None:
    params = signed(sample_params("receipt-failed.txt"), 1_700_000_000)
    adapter = carrier()
    if fresh:
        adapter.verify(form_request(params), 1_700_000_000 + skew_s)
    else:
        with pytest.raises(InvalidSignature, match="window"):
            adapter.verify(form_request(params), 1_700_000_000 + skew_s)


@pytest.mark.parametrize(
    ("request_", "reason"),
    [
        (get_request({"msisdn": "1", "timestamp": "1700000000"}), "sig is missing"),
        (get_request({"msisdn": "1", "sig": "ab"}), "timestamp"),
        (get_request({"timestamp": "soon", "sig": "ab"}), "timestamp"),
        (get_request({"timestamp": "1700000000", "sig": "ab"}), "does not match"),
        (CallbackRequest("GET", f"{PUBLIC_URL}/hooks/vonage?a=1&a=2", {}, {}, b""), "read"),
        (CallbackRequest("POST", PUBLIC_URL, {"content-type": "text/plain"}, {}, b"a=1"), "read"),
        (CallbackRequest("POST", PUBLIC_URL, {}, {}, b"a=1"), "read"),
        (CallbackRequest("POST", PUBLIC_URL, JSON, {}, b'{"sig": ["x"]}'), "read"),
        (CallbackRequest("POST", PUBLIC_URL, JSON, {}, b'{"sig": "ab"'), "read"),
        (CallbackRequest("POST", PUBLIC_URL, FORM, {}, b"text=%ff&sig=1"), "read"),
        (CallbackRequest("POST", PUBLIC_URL, FORM, {}, b"text=\xff&sig=1"), "read"),
    ],
)
def test_missing_or_malformed_signatures_are_refused(
    request_: CallbackRequest, reason: str
) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        carrier().verify(request_, 1_700_000_000)


def test_error_messages_never_show_the_secret() -> None:
    params = signed(sample_params("inbound-get.txt"), 1_700_000_000, secret="wrong")
    with pytest.raises(InvalidSignature) as caught:
        carrier().verify(get_request(params), 1_700_000_000)
    assert SECRET not in str(caught.value)
    assert params["sig"] not in str(caught.value)


# Parsing recorded payloads ----------------------------------------------------------------------


INBOUND_GET = InboundSms("0B0000004B65F62F", "+15862151111", "+12812581111", "Msg")
INBOUND_POST = InboundSms("0A0000000123ABCD1", "+447700900001", "+447700900000", "Hello world")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("inbound-get.txt", Callback("0B0000004B65F62F", INBOUND_GET)),
        ("inbound-post.json", Callback("0A0000000123ABCD1", INBOUND_POST)),
        ("inbound-post-form.txt", Callback("0A0000000123ABCD1", INBOUND_POST)),
        (
            "inbound-concat-2.txt",
            Callback(
                "0B00000053FFB410",
                InboundSms(
                    "0B00000053FFB410", "+447700900001", "+447700900000",
                    "the second part arrives as its own request with the same concat-ref, ",
                    concat=Concat("108", 3, 2),
                ),
            ),
        ),
        (
            "inbound-binary.txt",
            Callback("0B00000053FFB412", Ignored("binary inbound SMS is not supported")),
        ),
        (
            "receipt-delivered.json",
            Callback(
                "0B00000127FDBC63|delivered|0|1810251310",
                DeliveryReport("0B00000127FDBC63", S.DELIVERED, "delivered", ""),
            ),
        ),
        (
            "receipt-failed.txt",
            Callback(
                "0B00000127FDBC64|failed|6|2001011200",
                DeliveryReport("0B00000127FDBC64", S.FAILED, "failed", "6"),
            ),
        ),
        (
            "receipt-accepted.txt",
            Callback(
                "0B00000127FDBC65|accepted|0|2001011200",
                DeliveryReport("0B00000127FDBC65", S.SENT, "accepted", ""),
            ),
        ),
    ],
)  # fmt: skip
@pytest.mark.parametrize("how", list(REQUESTS))
def test_samples_parse_to_exact_events(name: str, expected: Callback, how: str) -> None:
    params = signed(sample_params(name), 1_700_000_000)
    assert carrier().parse(REQUESTS[how](params)) == expected


@pytest.mark.parametrize(
    ("carrier_status", "status"),
    [
        ("accepted", S.SENT),
        ("buffered", S.SENT),
        ("delivered", S.DELIVERED),
        ("failed", S.FAILED),
        ("rejected", S.FAILED),
        ("expired", S.FAILED),
        ("unknown", S.DLR_TIMEOUT),
    ],
)
def test_receipt_statuses_map_per_section_8(carrier_status: str, status: TargetStatus) -> None:
    params = sample_params("receipt-failed.txt") | {"status": carrier_status, "err-code": "2"}
    event = carrier().parse(form_request(params)).event
    assert event == DeliveryReport("0B00000127FDBC64", status, carrier_status, "2")


def test_an_untracked_receipt_status_is_ignored() -> None:
    params = sample_params("receipt-failed.txt") | {"status": "partially delivered"}
    assert isinstance(carrier().parse(form_request(params)).event, Ignored)


def test_numbers_gain_a_plus_and_alphanumeric_senders_stay() -> None:
    assert vonage.from_vonage_number("447700900001") == "+447700900001"
    assert vonage.from_vonage_number("Nexmo CLI") == "Nexmo CLI"
    assert vonage.from_vonage_number("\u0664\u0664") == "\u0664\u0664"  # non-ASCII digits
    params = sample_params("inbound-get.txt") | {"msisdn": "VONAGE"}
    event = carrier().parse(get_request(params)).event
    assert isinstance(event, InboundSms)
    assert event.source == "VONAGE"


@pytest.mark.parametrize(
    "changes",
    [
        {"messageId": ""},
        {"msisdn": ""},
        {"concat-ref": ""},
        {"concat-part": "4"},
        {"concat-part": "0"},
        {"concat-total": "many"},
        {"concat": "maybe"},
    ],
)
def test_malformed_inbound_is_refused(changes: dict[str, str]) -> None:
    params = sample_params("inbound-concat-1.txt") | changes
    with pytest.raises(MalformedCallback):
        carrier().parse(form_request(params))


def test_malformed_receipts_are_refused() -> None:
    with pytest.raises(MalformedCallback):
        carrier().parse(get_request({"status": "delivered"}))
    with pytest.raises(MalformedCallback):
        carrier().parse(CallbackRequest("POST", PUBLIC_URL, {}, {}, b"status=delivered"))


# Send -------------------------------------------------------------------------------------------


def submission(text: str = "hello", source: str = "+447700900000") -> Submission:
    return Submission(
        source=source,
        destination="+447700900001",
        text=text,
        status_callback_url=f"{PUBLIC_URL}/hooks/vonage",
        reference="0b9e0e2a-7d0c-4c6b-9d0a-6f3f6e0c7a11:0",
    )


def test_build_send_request_is_the_documented_json() -> None:
    url, headers, body = vonage.build_send_request(
        config(base_url="https://rest.example/"), submission()
    )
    assert url == "https://rest.example/sms/json"
    assert headers == {"content-type": "application/json", "accept": "application/json"}
    assert json.loads(body) == {
        "api_key": "key",
        "api_secret": "api-secret",
        "from": "447700900000",
        "to": "447700900001",
        "text": "hello",
        "type": "text",
        "callback": f"{PUBLIC_URL}/hooks/vonage",
        "status-report-req": 1,
        "client-ref": "0b9e0e2a-7d0c-4c6b-9d0a-6f3f6e0c7a11:0",
    }


@pytest.mark.parametrize(
    ("text", "kind"),
    [("caf\u00e9 {ok}", "text"), ("\u4f60\u597d", "unicode"), ("\U0001f600", "unicode")],
)
def test_send_type_follows_the_encoding(text: str, kind: str) -> None:
    _, _, body = vonage.build_send_request(config(), submission(text))
    assert json.loads(body)["type"] == kind


def test_send_keeps_alphanumeric_senders_and_bounds_client_ref() -> None:
    long_ref = msgspec.structs.replace(submission(source="MyBrand"), reference="r" * 150)
    _, _, body = vonage.build_send_request(config(), long_ref)
    assert json.loads(body)["from"] == "MyBrand"
    assert json.loads(body)["client-ref"] == "r" * 100


def test_read_send_response_single_and_multi_part() -> None:
    assert vonage.read_send_response(200, sample("send-1-part.json")) == SendResult(
        "0A0000000123ABCD1", parts=1, carrier_status="0", part_ids=("0A0000000123ABCD1",)
    )
    assert vonage.read_send_response(200, sample("send-2-parts.json")) == SendResult(
        "0A0000000123ABCD1",
        parts=2,
        carrier_status="0",
        part_ids=("0A0000000123ABCD1", "0A0000000123ABCD2"),
    )


@pytest.mark.parametrize(
    ("name", "code"), [("send-refused.json", "4"), ("send-part-refused.json", "7")]
)
def test_refusals_inside_http_200_are_permanent(name: str, code: str) -> None:
    with pytest.raises(CarrierPermanentError) as caught:
        vonage.read_send_response(200, sample(name))
    assert caught.value.error_code == code


def test_other_http_refusals_are_permanent() -> None:
    with pytest.raises(CarrierPermanentError) as caught:
        vonage.read_send_response(401, b"")
    assert caught.value.error_code == "401"


@pytest.mark.parametrize(
    ("status_code", "body"),
    [
        (200, sample("send-throttled.json")),
        (429, b""),
        (500, sample("send-1-part.json")),
        (503, b"<html>"),
        (200, b"<html>"),
        (200, b'{"message-count": "0", "messages": []}'),
        (200, b'{"message-count": "1", "messages": [{"status": "0"}]}'),
    ],
)
def test_throttling_server_errors_and_unreadable_answers_are_transient(
    status_code: int, body: bytes
) -> None:
    with pytest.raises(CarrierTransientError):
        vonage.read_send_response(status_code, body)


def test_a_throttled_part_retries_the_whole_message() -> None:
    # Part 1 went out, part 2 was throttled: retrying resends part 1 (documented trade-off).
    with pytest.raises(CarrierTransientError, match="throttled"):
        vonage.read_send_response(200, sample("send-throttled.json"))


async def test_send_posts_through_the_injected_client() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=sample("send-2-parts.json"))

    adapter = carrier(httpx.MockTransport(answer), base_url="https://rest.example")
    result = await adapter.send(submission(), 5.0)
    assert result.part_ids == ("0A0000000123ABCD1", "0A0000000123ABCD2")
    assert str(seen[0].url) == "https://rest.example/sms/json"
    with pytest.raises(CarrierTransientError, match="unreachable: ConnectError"):
        await carrier().send(submission(), 5.0)


@pytest.mark.parametrize("key", ["api_key", "api_secret", "signature_secret"])
def test_from_config_refuses_empty_credentials(key: str) -> None:
    context = CarrierContext(
        httpx.AsyncClient(transport=httpx.MockTransport(refuse)), PUBLIC_URL, ManualClock()
    )
    with pytest.raises(ConfigError, match=key):
        vonage.from_config(config(**{key: ""}), context)


# End to end through the real server -------------------------------------------------------------


TENANT = "+447700900000"  # the Vonage number the samples are addressed to
PEER = "+447700900001"


async def start(
    start_gateway: ServerFactory,
    api: FakeCarrierApi | None = None,
    *,
    method: str = "md5hash",
    **kwargs: Any,
) -> GatewayServer:
    section = {"api_key": "key", "api_secret": "api-secret", "signature_secret": SECRET,
               "signature_method": method}  # fmt: skip
    if api is not None:
        section["base_url"] = api.base_url
    return await start_gateway(carriers={"vonage": section}, **kwargs)


async def post_callback(
    server: GatewayServer,
    params: dict[str, str],
    *,
    how: str = "form",
    sign: bool = True,
    secret: str = SECRET,
    method: str = "md5hash",
    skew_s: float = 0,
) -> httpx.Response:
    """Call /hooks/vonage as Vonage would: GET, POST form or POST-JSON, signed."""
    now_s = server.clock.now().timestamp() + skew_s
    if sign:
        params = signed(params, now_s, secret=secret, method=method)
    if how == "get":
        return await server.client.get("/hooks/vonage", params=params)
    if how == "json":
        headers = {"content-type": "application/json"}
        return await server.client.post(
            "/hooks/vonage", content=json.dumps(params), headers=headers
        )
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return await server.client.post("/hooks/vonage", content=urlencode(params), headers=headers)


def receipt(
    message_id: str, status: str, err_code: str = "0", scts: str = "2601011200"
) -> dict[str, str]:
    return sample_params("receipt-failed.txt") | {
        "messageId": message_id, "status": status, "err-code": err_code, "scts": scts,
    }  # fmt: skip


async def stored(server: GatewayServer, message_id: str) -> Message:
    message = await server.gateway.store.get_message(message_id)
    assert message is not None
    return message


async def status_of(server: GatewayServer, message_id: str) -> tuple[S, str, str]:
    target = (await stored(server, message_id)).targets[0]
    return target.status, target.carrier_status, target.error_code


async def vonage_tenant(server: GatewayServer) -> Tenant:
    # Workers are off in most of these tests: the webhook address only makes events be recorded.
    return await server.add_tenant(TENANT, webhook_uri="http://127.0.0.1:9/hook", carrier="vonage")


async def send_one(server: GatewayServer, tenant: Tenant, text: str = "hello") -> str:
    response = await server.send(tenant, [PEER], text)
    assert response.status_code == 200, response.text
    assert await server.gateway.dispatcher.run_once() == 1
    return str(response.json()["id"])


async def count_rows(server: GatewayServer, table: str) -> int:
    async with server.gateway.store.reading() as tx:
        row = await tx.one(f"SELECT COUNT(*) AS n FROM {table}")  # noqa: S608 - test tables
    assert row is not None
    return int(row["n"])


async def test_e2e_signed_inbound_becomes_an_inbound_message(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    server = await start(start_gateway)
    tenant = await server.add_tenant("+12812581111", webhook_uri=customer_endpoint.url,
                                     carrier="vonage")  # fmt: skip
    response = await post_callback(server, sample_params("inbound-get.txt"), how="get")
    assert response.status_code == 200
    assert response.content == b""
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.direction.value, message.source.target, message.text) == (
        "inbound", "+15862151111", "Msg"
    )  # fmt: skip
    assert [(t.destination.target, t.status, t.carrier) for t in message.targets] == [
        ("+12812581111", S.RECEIVED, "vonage")
    ]
    [event] = await customer_endpoint.wait_for(1)
    assert event.json()["type"] == "message_created"
    assert event.json()["data"]["id"] == message.id


@pytest.mark.parametrize("how", ["get", "form", "json"])
async def test_e2e_inbound_is_accepted_as_get_form_and_json(
    start_gateway: ServerFactory, manual_clock: ManualClock, how: str
) -> None:
    server = await start(start_gateway, clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant(TENANT, carrier="vonage")
    for _ in range(2):  # Vonage retries: the second is a duplicate
        response = await post_callback(server, sample_params("inbound-post.json"), how=how)
        assert response.status_code == 200
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert (message.source.target, message.text) == (PEER, "Hello world")


@pytest.mark.parametrize("method", METHODS)
async def test_e2e_every_signature_method(
    start_gateway: ServerFactory, manual_clock: ManualClock, method: str
) -> None:
    server = await start(start_gateway, clock=manual_clock, run_workers=False, method=method)
    tenant = await server.add_tenant(TENANT, carrier="vonage")
    other = "md5hash" if method != "md5hash" else "sha256"
    params = sample_params("inbound-post.json")
    forged = await post_callback(server, params, how="json", method=other)
    assert_error(forged, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    assert (await post_callback(server, params, how="json", method=method)).status_code == 200
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 1


async def test_e2e_concatenated_inbound_out_of_order_is_one_message(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start(start_gateway, clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant(TENANT, webhook_uri="http://127.0.0.1:9/hook",
                                     carrier="vonage")  # fmt: skip
    for part, how in ((3, "get"), (1, "json"), (3, "form"), (2, "form")):
        params = sample_params(f"inbound-concat-{part}.txt")
        assert (await post_callback(server, params, how=how)).status_code == 200
    [message] = await server.gateway.store.list_messages(tenant.id, 10, None)
    assert message.text == (
        "This is the first part of a long message that Vonage delivers one webhook per part, "
        "the second part arrives as its own request with the same concat-ref, "
        "and the third part ends it."
    )
    assert (message.source.target, message.targets[0].parts) == (PEER, 3)
    assert await event_kinds(server, message.id) == ["message_created"]


async def test_e2e_send_reaches_vonage_with_the_documented_fields(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, manual_clock: ManualClock
) -> None:
    fake_carrier_api.default = Reply(200, sample("send-1-part.json"))
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    message_id = await send_one(server, tenant, "hello \u20ac")
    [request] = fake_carrier_api.received
    assert (request.method, request.path) == ("POST", "/sms/json")
    assert "authorization" not in request.headers  # the SMS API takes credentials in the body
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "api_key": "key",
        "api_secret": "api-secret",
        "from": "447700900000",
        "to": "447700900001",
        "text": "hello \u20ac",
        "type": "text",
        "callback": f"{server.url}/hooks/vonage",
        "status-report-req": 1,
        "client-ref": f"{message_id}:0",
    }
    assert await status_of(server, message_id) == (S.SENT, "0", "")
    async with server.gateway.store.reading() as tx:
        ref = await tx.find_target("vonage", "0A0000000123ABCD1")
    assert ref is not None
    assert (ref.message_id, ref.idx) == (message_id, 0)


async def test_e2e_receipts_move_sent_to_delivered_and_to_failed(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, manual_clock: ManualClock
) -> None:
    fake_carrier_api.replies = [
        Reply(200, sample("send-1-part.json")),
        Reply(200, sample("send-1-part.json").replace(b"ABCD1", b"FFFF1")),
    ]
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    delivered_id = await send_one(server, tenant)
    failed_id = await send_one(server, tenant)
    for params, how in (
        (receipt("0A0000000123ABCD1", "buffered"), "get"),
        (receipt("0A0000000123ABCD1", "delivered"), "json"),
        (receipt("0A0000000123FFFF1", "failed", "6"), "form"),
    ):
        assert (await post_callback(server, params, how=how)).status_code == 200
    assert await status_of(server, delivered_id) == (S.DELIVERED, "delivered", "")
    assert await status_of(server, failed_id) == (S.FAILED, "failed", "6")
    for message_id in (delivered_id, failed_id):
        assert (
            await event_kinds(server, message_id) == ["message_created"] + ["message_updated"] * 2
        )


async def test_e2e_duplicate_and_reordered_receipts_change_nothing_twice(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, manual_clock: ManualClock
) -> None:
    fake_carrier_api.default = Reply(200, sample("send-1-part.json"))
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    message_id = await send_one(server, tenant)
    delivered = receipt("0A0000000123ABCD1", "delivered", scts="2601011201")
    for params in (delivered, delivered, receipt("0A0000000123ABCD1", "accepted"),
                   receipt("0A0000000123ABCD1", "failed", "6", scts="2601011202")):  # fmt: skip
        assert (await post_callback(server, params)).status_code == 200
    assert await status_of(server, message_id) == (S.DELIVERED, "delivered", "")
    assert await server.gateway.store.outbox_states(message_id) == [
        ("message_created", "pending", 0),
        ("message_updated", "pending", 0),
        ("message_updated", "pending", 0),
    ]


async def test_e2e_parts_are_aggregated(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, manual_clock: ManualClock
) -> None:
    two_parts = sample("send-2-parts.json")
    fake_carrier_api.replies = [
        Reply(200, two_parts),
        Reply(200, two_parts.replace(b"ABCD", b"EEEE")),
    ]
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    long_text = "x" * 200
    delivered_id = await send_one(server, tenant, long_text)
    failed_id = await send_one(server, tenant, long_text)
    assert (await stored(server, delivered_id)).targets[0].parts == 2

    async def report(params: dict[str, str]) -> None:
        assert (await post_callback(server, params)).status_code == 200

    await report(receipt("0A0000000123ABCD1", "delivered"))
    assert (await status_of(server, delivered_id))[0] is S.SENT
    await report(receipt("0A0000000123ABCD2", "delivered"))
    assert await status_of(server, delivered_id) == (S.DELIVERED, "delivered", "")

    await report(receipt("0A0000000123EEEE2", "failed", "4"))
    assert await status_of(server, failed_id) == (S.FAILED, "failed", "4")
    await report(receipt("0A0000000123EEEE1", "delivered"))
    assert await status_of(server, failed_id) == (S.FAILED, "failed", "4")
    for message_id in (delivered_id, failed_id):
        assert (
            await event_kinds(server, message_id) == ["message_created"] + ["message_updated"] * 2
        )


@pytest.mark.parametrize(
    "forgery",
    [
        {"secret": "not-the-secret"},
        {"skew_s": -(25 * 3600 + 1)},  # stale: older than Vonage's 24 h of retries
        {"skew_s": 301},  # from the future
        {"sign": False},
    ],
)
async def test_e2e_forged_stale_and_unsigned_callbacks_are_refused(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    manual_clock: ManualClock,
    forgery: dict[str, Any],
) -> None:
    fake_carrier_api.default = Reply(200, sample("send-1-part.json"))
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    message_id = await send_one(server, tenant)
    inbound = sample_params("inbound-post.json")
    for how in ("get", "form", "json"):
        for params in (inbound, receipt("0A0000000123ABCD1", "delivered")):
            response = await post_callback(server, params, how=how, **forgery)
            assert_error(response, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    assert await status_of(server, message_id) == (S.SENT, "0", "")
    assert len(await server.gateway.store.list_messages(tenant.id, 10, None)) == 1
    for table in ("processed_callbacks", "unrouted_inbound", "inbound_parts", "pending_reports"):
        assert await count_rows(server, table) == 0, table


async def test_e2e_a_permanent_refusal_fails_the_target_with_vonages_code(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, manual_clock: ManualClock
) -> None:
    fake_carrier_api.replies = [Reply(200, sample("send-refused.json")),
                                Reply(200, sample("send-part-refused.json"))]  # fmt: skip
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    assert await status_of(server, await send_one(server, tenant)) == (S.FAILED, "rejected", "4")
    assert await status_of(server, await send_one(server, tenant)) == (S.FAILED, "rejected", "7")


@pytest.mark.parametrize(
    "reply",
    [
        Reply(500, b"oops"),
        Reply(503, b""),
        Reply(429, b""),
        Reply(200, sample("send-throttled.json")),
    ],
)
async def test_e2e_transient_failures_are_retried_later(
    start_gateway: ServerFactory,
    fake_carrier_api: FakeCarrierApi,
    manual_clock: ManualClock,
    reply: Reply,
) -> None:
    fake_carrier_api.replies = [reply]
    fake_carrier_api.default = Reply(200, sample("send-1-part.json"))
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False,
                         dispatch={"retry_delays_s": [5]})  # fmt: skip
    tenant = await vonage_tenant(server)
    message_id = await send_one(server, tenant)
    assert (await status_of(server, message_id))[0] is S.QUEUED
    assert await server.gateway.dispatcher.run_once() == 0  # the retry waits
    manual_clock.advance(5)
    assert await server.gateway.dispatcher.run_once() == 1
    assert await status_of(server, message_id) == (S.SENT, "0", "")
    assert len(fake_carrier_api.received) == 2


async def test_e2e_unknown_is_dlr_timeout_and_a_late_receipt_applies(
    start_gateway: ServerFactory, fake_carrier_api: FakeCarrierApi, manual_clock: ManualClock
) -> None:
    fake_carrier_api.default = Reply(200, sample("send-1-part.json"))
    server = await start(start_gateway, fake_carrier_api, clock=manual_clock, run_workers=False)
    tenant = await vonage_tenant(server)
    message_id = await send_one(server, tenant)
    # `unknown` is Vonage's last word on a part: with every part settled, the target is dlr_timeout.
    assert (await post_callback(server, receipt("0A0000000123ABCD1", "unknown", "1"))).is_success
    assert (await status_of(server, message_id))[0] is S.DLR_TIMEOUT
    late = receipt("0A0000000123ABCD1", "delivered", scts="2601011300")
    assert (await post_callback(server, late)).is_success
    assert await status_of(server, message_id) == (S.DELIVERED, "delivered", "")
