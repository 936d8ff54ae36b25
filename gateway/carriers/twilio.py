"""Twilio Programmable Messaging: X-Twilio-Signature, form callbacks and the Messages API."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import parse_qs, parse_qsl, quote, urlencode, urlsplit

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
from gateway.config import TwilioConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus

SIGNATURE_HEADER = "x-twilio-signature"
# "Webhooks Rules" signing with a SharedKey announces itself: key=<key name>,algorithm=<algorithm>.
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
HMAC_SHA1 = "HMAC_SHA1"
HMAC_SHA256 = "HMAC_SHA256"
HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}
BODY_HASH_PARAM = "bodySHA256"
DEFAULT_PORTS = {"http": 80, "https": 443}
# An empty TwiML answer: "received, reply nothing".
TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
INBOUND_STATUSES = frozenset({"", "received"})

STATUS_MAP: dict[str, TargetStatus] = {
    "accepted": TargetStatus.SENT,
    "scheduled": TargetStatus.SENT,
    "queued": TargetStatus.SENT,
    "sending": TargetStatus.SENT,
    "sent": TargetStatus.SENT,
    "delivered": TargetStatus.DELIVERED,
    "read": TargetStatus.DELIVERED,
    "undelivered": TargetStatus.FAILED,
    "failed": TargetStatus.FAILED,
    "partially_delivered": TargetStatus.FAILED,
    "canceled": TargetStatus.FAILED,
}

Params = list[tuple[str, str]]


class InboundForm(msgspec.Struct, frozen=True, rename="pascal"):
    message_sid: str
    from_: str
    to: str
    body: str = ""
    num_segments: int | None = None


class StatusForm(msgspec.Struct, frozen=True, rename="pascal"):
    message_sid: str
    error_code: str = ""


class MessageResource(msgspec.Struct, frozen=True):
    sid: str
    status: str = ""
    num_segments: str | None = None  # a string; "0" until a Messaging Service picks a sender


class ErrorResource(msgspec.Struct, frozen=True):
    code: int | None = None
    message: str = ""
    more_info: str = ""
    status: int | None = None


_message_decoder = msgspec.json.Decoder(MessageResource)
_error_decoder = msgspec.json.Decoder(ErrorResource)


def from_config(section: msgspec.Struct, context: CarrierContext) -> TwilioCarrier:
    assert isinstance(section, TwilioConfig)
    for key in ("account_sid", "auth_token"):
        if not getattr(section, key):
            raise ConfigError(f"[carriers.twilio] {key} must be set")
    return TwilioCarrier(section, context.http)


# Signatures ------------------------------------------------------------------------------------


def string_to_sign(url: str, params: Iterable[tuple[str, str]]) -> str:
    """The URL, then name+value of each parameter, sorted and de-duplicated."""
    # Sorting the de-duplicated pairs orders names, then each name's values, by code point.
    return url + "".join(name + value for name, value in sorted(set(params)))


def signature(
    key: str, url: str, params: Iterable[tuple[str, str]], algorithm: str = HMAC_SHA1
) -> str:
    """X-Twilio-Signature: base64 HMAC(key, string_to_sign), SHA-1 or SHA-256."""
    signed = string_to_sign(url, params).encode()
    mac = hmac.new(key.encode(), signed, HASHES[algorithm]).digest()
    return base64.b64encode(mac).decode()


def signature_algorithm(settings: str | None) -> str:
    """The algorithm the settings header names; no header (or no algorithm) means HMAC_SHA1."""
    # Parsed as twilio-python's get_signature_algorithm does, names compared upper-cased.
    for part in (settings or "").split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return HMAC_SHA1


def signing_keys(
    request: CallbackRequest, auth_token: str, shared_key: str
) -> tuple[str, list[str]]:
    """The algorithm the request announces and the secrets that may have signed it."""
    settings = request.headers.get(SETTINGS_HEADER)
    algorithm = signature_algorithm(settings)
    if algorithm == HMAC_SHA256:
        if not shared_key:
            raise InvalidSignature("an HMAC_SHA256 signature needs webhook_shared_key, not set")
        return algorithm, [shared_key]
    if algorithm != HMAC_SHA1:
        raise InvalidSignature("X-Twilio-Webhooks-Signature-Settings names an unknown algorithm")
    # With the header a SharedKey may sign with SHA-1 too; without it, only the auth token does.
    if settings is not None and shared_key:
        return algorithm, [auth_token, shared_key]
    return algorithm, [auth_token]


def url_variants(url: str) -> list[str]:
    """The URL as received, without its port, and with the default port: Twilio signs any."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidSignature("the callback URL has an invalid port") from exc
    variants = [url]
    if port is not None:
        variants.append(parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl())
    elif parts.scheme in DEFAULT_PORTS:
        netloc = f"{parts.netloc}:{DEFAULT_PORTS[parts.scheme]}"
        variants.append(parts._replace(netloc=netloc).geturl())
    return variants


def signed_params(request: CallbackRequest) -> Params:
    """The parameters the signature covers: form fields, none for GET or a hashed JSON body."""
    body_hash = parse_qs(urlsplit(request.url).query).get(BODY_HASH_PARAM)
    if body_hash is not None:
        actual = hashlib.sha256(request.body).hexdigest()
        if not hmac.compare_digest(actual.encode(), body_hash[0].encode()):
            raise InvalidSignature(f"the body does not match {BODY_HASH_PARAM}")
        return []
    if request.method != "POST":
        return []
    try:
        return parse_qsl(request.body.decode(), keep_blank_values=True)
    except UnicodeDecodeError as exc:
        raise InvalidSignature("the body is not a form") from exc


def verify_request(auth_token: str, request: CallbackRequest, shared_key: str = "") -> None:
    given = request.headers.get(SIGNATURE_HEADER)
    if not given:
        raise InvalidSignature("X-Twilio-Signature is missing")
    algorithm, keys = signing_keys(request, auth_token, shared_key)
    params = signed_params(request)
    matches = [
        hmac.compare_digest(given.encode(), signature(key, url, params, algorithm).encode())
        for key in keys
        for url in url_variants(request.url)
    ]
    if not any(matches):
        raise InvalidSignature("X-Twilio-Signature does not match")


# Callbacks -------------------------------------------------------------------------------------


def callback_fields(request: CallbackRequest) -> dict[str, str]:
    """Twilio's parameters: the form body of a POST, the query of a GET."""
    if BODY_HASH_PARAM in request.query:
        raise MalformedCallback("a JSON body is not a Twilio messaging callback")
    if request.method != "POST":
        return dict(request.query)
    try:
        return dict(parse_qsl(request.body.decode(), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise MalformedCallback("the body is not a form") from exc


def parse_callback(request: CallbackRequest) -> Callback:
    fields = callback_fields(request)
    status = fields.get("MessageStatus") or fields.get("SmsStatus", "")
    try:
        if status in INBOUND_STATUSES:
            return _inbound(msgspec.convert(fields, InboundForm, strict=False))
        return _status_report(msgspec.convert(fields, StatusForm, strict=False), status)
    except msgspec.ValidationError as exc:
        raise MalformedCallback(f"not a Twilio messaging callback: {exc}") from exc


def _inbound(form: InboundForm) -> Callback:
    parts = form.num_segments if form.num_segments else None
    sms = InboundSms(form.message_sid, form.from_, form.to, form.body, parts=parts)
    return Callback(idempotency_key=form.message_sid, event=sms)


def _status_report(form: StatusForm, status: str) -> Callback:
    key = f"{form.message_sid}:{status}"
    target_status = STATUS_MAP.get(status)
    if target_status is None:
        return Callback(key, Ignored(f"Twilio status {status!r} is not tracked"))
    report = DeliveryReport(form.message_sid, target_status, status, form.error_code)
    return Callback(key, report)


# Send ------------------------------------------------------------------------------------------


def build_send_request(
    config: TwilioConfig, submission: Submission
) -> tuple[str, dict[str, str], bytes]:
    """POST .../Accounts/{AccountSid}/Messages.json, form body, HTTP Basic sid:token."""
    url = (
        f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/"
        f"{quote(config.account_sid, safe='')}/Messages.json"
    )
    sender = (
        ("MessagingServiceSid", config.messaging_service_sid)
        if config.messaging_service_sid
        else ("From", submission.source)
    )
    form = [
        ("To", submission.destination),
        sender,
        ("Body", submission.text),
        ("StatusCallback", submission.status_callback_url),
    ]
    credentials = base64.b64encode(f"{config.account_sid}:{config.auth_token}".encode()).decode()
    headers = {
        "authorization": f"Basic {credentials}",
        "content-type": "application/x-www-form-urlencoded",
        "accept": "application/json",
    }
    return url, headers, urlencode(form).encode()


def read_send_response(status_code: int, body: bytes) -> SendResult:
    carrier_http.raise_if_transient("Twilio", status_code)
    if not 200 <= status_code < 300:
        raise CarrierPermanentError(
            f"Twilio refused the message ({status_code})", error_code=_error_code(status_code, body)
        )
    try:
        message = _message_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CarrierTransientError("Twilio answered an unreadable body") from exc
    segments = message.num_segments or ""
    numeric = segments.isascii() and segments.isdigit()
    parts = int(segments) if numeric and int(segments) > 0 else None
    return SendResult(message.sid, parts=parts, carrier_status=message.status)


def _error_code(status_code: int, body: bytes) -> str:
    """Twilio's own error code (e.g. 21211), else the HTTP status."""
    try:
        error = _error_decoder.decode(body)
    except msgspec.DecodeError:
        return str(status_code)
    return str(error.code) if error.code is not None else str(status_code)


class TwilioCarrier:
    name = "twilio"
    ack = Ack(200, "text/xml", TWIML_EMPTY)

    def __init__(self, config: TwilioConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        # Twilio's signature carries no timestamp: there is no replay window to check.
        verify_request(self._config.auth_token, request, self._config.webhook_shared_key)

    def parse(self, request: CallbackRequest) -> Callback:
        return parse_callback(request)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        request = build_send_request(self._config, submission)
        status_code, body = await carrier_http.post(self._http, "Twilio", request, timeout_s)
        return read_send_response(status_code, body)
