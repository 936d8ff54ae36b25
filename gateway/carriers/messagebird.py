"""The MessageBird (legacy REST API) adapter: JWT-signed callbacks, status reports, inbound, send.

Wire format: carriers.md §6 and the README's MessageBird section. MessageBird writes numbers as
digits without `+`; the gateway adds the `+` on the way in and drops it on the way out.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any
from urllib.parse import parse_qsl

import httpx
import jwt
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
from gateway.config import MessageBirdConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus

SIGNATURE_HEADER = "messagebird-signature-jwt"
ALGORITHMS = ["HS256", "HS384", "HS512"]  # never "none", never an asymmetric algorithm
ISSUER = "MessageBird"
LEEWAY_S = 1.0
SUBMIT_PATH = "/messages"
FORM_TYPE = "application/x-www-form-urlencoded"

STATUSES = {
    "scheduled": TargetStatus.SENT,
    "sent": TargetStatus.SENT,
    "buffered": TargetStatus.SENT,
    "delivered": TargetStatus.DELIVERED,
    "delivery_failed": TargetStatus.FAILED,
    "expired": TargetStatus.FAILED,
}

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class StatusReport(msgspec.Struct, frozen=True, rename="camel"):
    id: NonEmpty
    recipient: NonEmpty
    status: NonEmpty
    status_datetime: NonEmpty
    status_error_code: str = ""
    message_part_count: str = ""  # kept as text: an empty value means "not said"


class IncomingMessage(msgspec.Struct, frozen=True, rename="camel"):
    id: NonEmpty
    originator: NonEmpty
    recipient: NonEmpty
    body: str


class SubmitRequest(msgspec.Struct, frozen=True, rename="camel"):
    originator: str
    recipients: list[str]
    body: str
    report_url: str
    reference: str


class RecipientItem(msgspec.Struct, frozen=True, rename="camel"):
    # Lenient: a quibble with an accepted message must not make the dispatcher send it again.
    status: str = ""
    message_part_count: int | None = None


class Recipients(msgspec.Struct, frozen=True):
    items: list[RecipientItem] = []


class SubmitResponse(msgspec.Struct, frozen=True):
    id: NonEmpty
    recipients: Recipients = msgspec.field(default_factory=Recipients)


class ApiError(msgspec.Struct, frozen=True):
    code: int | str
    description: str = ""
    parameter: str | None = None


class ErrorResponse(msgspec.Struct, frozen=True):
    errors: Annotated[list[ApiError], msgspec.Meta(min_length=1)]


_submit_response_decoder = msgspec.json.Decoder(SubmitResponse)
_error_decoder = msgspec.json.Decoder(ErrorResponse)
_encoder = msgspec.json.Encoder()


def from_config(section: msgspec.Struct, context: CarrierContext) -> MessageBirdCarrier:
    assert isinstance(section, MessageBirdConfig)
    for key in ("access_key", "signing_key"):
        if not getattr(section, key):
            raise ConfigError(f"[carriers.messagebird] {key} must be set")
    return MessageBirdCarrier(section, context.http)


class MessageBirdCarrier:
    """The adapter: pure verify/parse of MessageBird callbacks plus the send call."""

    name = "messagebird"
    ack = Ack(content_type="text/plain", body=b"OK")

    def __init__(self, config: MessageBirdConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        token = request.headers.get(SIGNATURE_HEADER)
        if not token:
            raise InvalidSignature("MessageBird-Signature-JWT is missing")
        verify_signature(self._config.signing_key, token, request.url, request.body, now_s)

    def parse(self, request: CallbackRequest) -> Callback:
        return parse_callback(request)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        request = build_send_request(self._config, submission)
        status_code, body = await carrier_http.post(self._http, "messagebird", request, timeout_s)
        return read_send_response(status_code, body)


# Signature ---------------------------------------------------------------------------------


def verify_signature(signing_key: str, token: str, url: str, body: bytes, now_s: float) -> None:
    """Raise InvalidSignature unless `token` signs this URL and body and is valid at `now_s`."""
    claims = _decode_token(signing_key, token)
    _check_window(claims, now_s)
    if not _hash_matches(claims.get("url_hash"), _url_bytes(url)):
        raise InvalidSignature("invalid jwt: claim url_hash is invalid")
    payload_hash = claims.get("payload_hash")
    if payload_hash and not body:
        raise InvalidSignature("invalid jwt: claim payload_hash is set but the body is empty")
    if body and not payload_hash:
        raise InvalidSignature("invalid jwt: claim payload_hash is not set but a body is present")
    if body and not _hash_matches(payload_hash, body):
        raise InvalidSignature("invalid jwt: claim payload_hash is invalid")


def _decode_token(signing_key: str, token: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=signing_key.encode(),
            algorithms=ALGORITHMS,
            issuer=ISSUER,
            # PyJWT reads the system clock; nbf/exp are checked against the gateway's below.
            options={
                "require": ["iss", "nbf", "exp", "url_hash"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise InvalidSignature(f"invalid jwt: {exc}") from exc
    return claims


def _check_window(claims: dict[str, Any], now_s: float) -> None:
    nbf, exp = claims["nbf"], claims["exp"]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (nbf, exp)):
        raise InvalidSignature("invalid jwt: nbf and exp must be numbers")
    if nbf > now_s + LEEWAY_S:
        raise InvalidSignature("invalid jwt: claim nbf is in the future")
    if exp <= now_s - LEEWAY_S:
        raise InvalidSignature("invalid jwt: claim exp is in the past")


def _url_bytes(url: str) -> bytes:
    # The app rebuilds the query string from the raw bytes decoded as latin-1 (as the SDK hashes).
    try:
        return url.encode("latin-1")
    except UnicodeEncodeError:
        return url.encode()


def _hash_matches(claimed: object, data: bytes) -> bool:
    if not isinstance(claimed, str):
        return False
    return hmac.compare_digest(claimed.encode(), hashlib.sha256(data).hexdigest().encode())


# Callbacks ---------------------------------------------------------------------------------


def parse_callback(request: CallbackRequest) -> Callback:
    """A status report or an incoming message, from the query string (GET) or a form body."""
    fields = _fields(request)
    try:
        if "status" in fields:
            return _report(msgspec.convert(fields, StatusReport, strict=False))
        if "originator" in fields:
            return _inbound(msgspec.convert(fields, IncomingMessage, strict=False))
    except msgspec.ValidationError as exc:
        raise MalformedCallback(f"not a messagebird callback: {exc}") from exc
    raise MalformedCallback("not a messagebird callback: neither a status report nor an SMS")


def _fields(request: CallbackRequest) -> dict[str, str]:
    fields = dict(request.query)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.body and content_type == FORM_TYPE:
        try:
            fields.update(parse_qsl(request.body.decode(), keep_blank_values=True))
        except UnicodeDecodeError as exc:
            raise MalformedCallback("the form body is not UTF-8") from exc
    return fields


def _report(report: StatusReport) -> Callback:
    key = _encoder.encode([report.id, report.recipient, report.status, report.status_datetime])
    status = STATUSES.get(report.status)
    if status is None:
        return Callback(key.decode(), Ignored(f"untracked status {report.status!r}"))
    event = DeliveryReport(
        carrier_message_id=report.id,
        status=status,
        carrier_status=report.status,
        error_code=report.status_error_code,
        parts=_part_count(report.message_part_count),
    )
    return Callback(key.decode(), event)


def _part_count(text: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise MalformedCallback(f"messagePartCount {text!r} is not a count")
    return int(text)


def _inbound(message: IncomingMessage) -> Callback:
    sms = InboundSms(
        carrier_message_id=message.id,
        source=to_e164(message.originator),
        destination=to_e164(message.recipient),
        text=message.body,
    )
    return Callback(message.id, sms)


def to_e164(number: str) -> str:
    """MessageBird's `31612345678` as `+31612345678`; alphanumeric senders stay as they are."""
    return "+" + number if number.isascii() and number.isdigit() else number


def to_msisdn(number: str) -> str:
    """The gateway's `+31612345678` as MessageBird's `31612345678`."""
    digits = number.removeprefix("+")
    return digits if digits.isascii() and digits.isdigit() else number


# Send --------------------------------------------------------------------------------------


def build_send_request(
    config: MessageBirdConfig, submission: Submission
) -> tuple[str, dict[str, str], bytes]:
    """The URL, headers and JSON body of one `POST /messages` (one recipient per target)."""
    payload = SubmitRequest(
        originator=to_msisdn(submission.source),
        recipients=[to_msisdn(submission.destination)],
        body=submission.text,
        report_url=submission.status_callback_url,
        reference=submission.reference,
    )
    headers = {
        "authorization": f"AccessKey {config.access_key}",
        "content-type": "application/json",
        "accept": "application/json",
    }
    return config.base_url.rstrip("/") + SUBMIT_PATH, headers, _encoder.encode(payload)


def read_send_response(status_code: int, body: bytes) -> SendResult:
    """The carrier message id and part count, or the error that says what to do next."""
    carrier_http.raise_if_transient("messagebird", status_code)
    if not 200 <= status_code < 300:
        raise _refusal(status_code, body)
    try:
        accepted = _submit_response_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise CarrierTransientError("messagebird answered an unreadable body") from exc
    items = accepted.recipients.items
    if not items:
        return SendResult(accepted.id)
    parts = items[0].message_part_count
    return SendResult(accepted.id, parts if parts and parts > 0 else None, items[0].status)


def _refusal(status_code: int, body: bytes) -> CarrierPermanentError:
    try:
        error = _error_decoder.decode(body).errors[0]
    except (msgspec.DecodeError, UnicodeDecodeError):
        return CarrierPermanentError(
            f"messagebird refused the message ({status_code})", error_code=str(status_code)
        )
    return CarrierPermanentError(
        f"messagebird refused the message ({status_code}): {error.description}",
        error_code=str(error.code),
    )
