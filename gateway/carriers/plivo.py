"""Plivo Messaging: X-Plivo-Signature-V3 (and legacy V2), form callbacks and the Message API."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import msgspec

from gateway.carriers import http as carrier_http
from gateway.carriers.base import (
    Ack,
    Callback,
    CallbackRequest,
    CarrierContext,
    DeliveryReport,
    Ignored,
    InboundSms,
    SendResult,
    Submission,
)
from gateway.config import PlivoConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus

V3_HEADERS = ("x-plivo-signature-v3", "x-plivo-signature-ma-v3")
V3_NONCE_HEADER = "x-plivo-signature-v3-nonce"
V2_HEADERS = ("x-plivo-signature-v2", "x-plivo-signature-ma-v2")
V2_NONCE_HEADER = "x-plivo-signature-v2-nonce"
# message_url expects Plivo XML; an empty <Response> sends no reply.
XML_EMPTY = b'<?xml version="1.0" encoding="utf-8"?><Response></Response>'

STATUS_MAP: dict[str, TargetStatus] = {
    "queued": TargetStatus.SENT,
    "sent": TargetStatus.SENT,
    "delivered": TargetStatus.DELIVERED,
    "read": TargetStatus.DELIVERED,
    "undelivered": TargetStatus.FAILED,
    "failed": TargetStatus.FAILED,
    "rejected": TargetStatus.FAILED,
}

Params = list[tuple[str, str]]


class InboundForm(msgspec.Struct, frozen=True, rename="pascal"):
    message_uuid: str = msgspec.field(name="MessageUUID")
    from_: str = msgspec.field(name="From")
    to: str = msgspec.field(name="To")
    text: str = ""
    units: int | None = None


class StatusForm(msgspec.Struct, frozen=True, rename="pascal"):
    message_uuid: str = msgspec.field(name="MessageUUID")
    status: str = msgspec.field(name="Status")
    error_code: str = ""
    sequence: str = ""
    units: int | None = None


class SendRequest(msgspec.Struct, frozen=True):
    src: str
    dst: str
    text: str
    url: str
    method: str = "POST"


class SendResponse(msgspec.Struct, frozen=True):
    message_uuid: list[str]
    message: str = ""
    api_id: str = ""


_encoder = msgspec.json.Encoder()
_response_decoder = msgspec.json.Decoder(SendResponse)


def from_config(section: msgspec.Struct, context: CarrierContext) -> PlivoCarrier:
    assert isinstance(section, PlivoConfig)
    for key in ("auth_id", "auth_token"):
        if not getattr(section, key):
            raise ConfigError(f"[carriers.plivo] {key} must be set")
    return PlivoCarrier(section, context.http)


# Signatures ------------------------------------------------------------------------------------


def v3_string_to_sign(method: str, url: str, body_params: Params, nonce: str) -> str:
    """V3: base URL, `?` + sorted query `k=v&…`, `.` between, sorted body `kv…`, `.` + nonce."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    # A GET carries its parameters in the query only; only a POST signs a body.
    body = sorted(body_params) if method == "POST" else []
    query_text = "&".join(f"{name}={value}" for name, value in query)
    signed = base + ("?" + query_text if query_text or body else "")
    signed += "." if query_text and body else ""
    signed += "".join(name + value for name, value in body)
    return f"{signed}.{nonce}"


def v3_signature(auth_token: str, method: str, url: str, body_params: Params, nonce: str) -> str:
    signed = v3_string_to_sign(method, url, body_params, nonce)
    return _b64_hmac_sha256(auth_token, signed)


def v2_signature(auth_token: str, url: str, nonce: str) -> str:
    """V2 (legacy): base64 HMAC-SHA256 of scheme://host/path + nonce; the body is not signed."""
    parts = urlsplit(url)
    return _b64_hmac_sha256(auth_token, f"{parts.scheme}://{parts.netloc}{parts.path}{nonce}")


def _b64_hmac_sha256(key: str, message: str) -> str:
    mac = hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def verify_request(auth_token: str, request: CallbackRequest, *, accept_v2: bool = False) -> None:
    headers = request.headers
    if headers.get(V3_NONCE_HEADER) or any(headers.get(name) for name in V3_HEADERS):
        # V3 covers the body; once it is present, a weaker V2 match must not stand in for it.
        params = _form(request) if request.method == "POST" else []
        expected = v3_signature(
            auth_token, request.method, request.url, params, _nonce(request, V3_NONCE_HEADER)
        )
        _match(request, V3_HEADERS, expected)
        return
    if not accept_v2:
        # V2 signs no body: a captured header would let anyone forge the content.
        raise InvalidSignature("X-Plivo-Signature-V3 is missing (V2 is not accepted)")
    expected = v2_signature(auth_token, request.url, _nonce(request, V2_NONCE_HEADER))
    _match(request, V2_HEADERS, expected)


def _nonce(request: CallbackRequest, header: str) -> str:
    nonce = request.headers.get(header)
    if not nonce:
        raise InvalidSignature("the Plivo signature nonce is missing")
    return nonce


def _match(request: CallbackRequest, header_names: tuple[str, ...], expected: str) -> None:
    # A header may list several signatures (e.g. during a token rotation): any one matches.
    given = [
        candidate.strip()
        for name in header_names
        for candidate in request.headers.get(name, "").split(",")
        if candidate.strip()
    ]
    if not given:
        raise InvalidSignature("the Plivo signature is missing")
    if not any([hmac.compare_digest(g.encode(), expected.encode()) for g in given]):
        raise InvalidSignature("the Plivo signature does not match")


def _form(request: CallbackRequest) -> Params:
    try:
        return parse_qsl(request.body.decode(), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise InvalidSignature("the body is not a form") from exc


# Callbacks -------------------------------------------------------------------------------------


def parse_callback(request: CallbackRequest) -> Callback:
    """Plivo's parameters (form body of a POST, query of a GET) into an inbound SMS or a report."""
    try:
        fields = dict(_form(request)) if request.method == "POST" else dict(request.query)
    except InvalidSignature as exc:
        raise MalformedCallback("the body is not a form") from exc
    try:
        if "Status" in fields:
            return _status_report(msgspec.convert(fields, StatusForm, strict=False))
        return _inbound(msgspec.convert(fields, InboundForm, strict=False))
    except msgspec.ValidationError as exc:
        raise MalformedCallback(f"not a Plivo messaging callback: {exc}") from exc


def e164(number: str) -> str:
    """Plivo writes numbers without the `+`; the gateway's numbers carry it."""
    return f"+{number}" if number.isdigit() else number


def _inbound(form: InboundForm) -> Callback:
    sms = InboundSms(
        form.message_uuid, e164(form.from_), e164(form.to), form.text, parts=form.units or None
    )
    return Callback(idempotency_key=form.message_uuid, event=sms)


def _status_report(form: StatusForm) -> Callback:
    # Sequence orders Plivo's callbacks for one message; older accounts send none.
    suffix = f"seq:{form.sequence}" if form.sequence else f"status:{form.status}"
    key = f"{form.message_uuid}:{suffix}"
    status = STATUS_MAP.get(form.status)
    if status is None:
        return Callback(key, Ignored(f"Plivo status {form.status!r} is not tracked"))
    # ErrorCode explains failures only (delivered ones may carry "000").
    error_code = form.error_code if status is TargetStatus.FAILED else ""
    report = DeliveryReport(form.message_uuid, status, form.status, error_code, form.units or None)
    return Callback(key, report)


# Send ------------------------------------------------------------------------------------------


def build_send_request(
    config: PlivoConfig, submission: Submission
) -> tuple[str, dict[str, str], bytes]:
    """POST .../v1/Account/{auth_id}/Message/, JSON body, HTTP Basic auth_id:auth_token."""
    url = f"{config.base_url.rstrip('/')}/v1/Account/{quote(config.auth_id, safe='')}/Message/"
    payload = SendRequest(
        src=submission.source,
        dst=submission.destination,
        text=submission.text,
        url=submission.status_callback_url,
    )
    credentials = base64.b64encode(f"{config.auth_id}:{config.auth_token}".encode()).decode()
    headers = {
        "authorization": f"Basic {credentials}",
        "content-type": "application/json",
        "accept": "application/json",
    }
    return url, headers, _encoder.encode(payload)


def read_send_response(status_code: int, body: bytes) -> SendResult:
    carrier_http.raise_if_transient("Plivo", status_code)
    if not 200 <= status_code < 300:
        # Plivo's error body is {"api_id", "error": <text>}: no code beyond the HTTP status.
        raise CarrierPermanentError(
            f"Plivo refused the message ({status_code})", error_code=str(status_code)
        )
    try:
        accepted = _response_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CarrierTransientError("Plivo answered an unreadable body") from exc
    if not accepted.message_uuid:
        raise CarrierTransientError("Plivo answered without a message_uuid")
    # Plivo queues every accepted message; Units (the part count) comes with the callbacks.
    return SendResult(accepted.message_uuid[0], carrier_status="queued")


class PlivoCarrier:
    name = "plivo"
    ack = Ack(200, "text/xml", XML_EMPTY)

    def __init__(self, config: PlivoConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        # Plivo signs no timestamp: there is no replay window to check.
        verify_request(self._config.auth_token, request, accept_v2=self._config.accept_v2)

    def parse(self, request: CallbackRequest) -> Callback:
        return parse_callback(request)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        request = build_send_request(self._config, submission)
        status_code, body = await carrier_http.post(self._http, "Plivo", request, timeout_s)
        return read_send_response(status_code, body)
