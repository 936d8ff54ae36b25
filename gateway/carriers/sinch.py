"""The Sinch (SMS REST API, XMS) adapter: HMAC-signed JSON callbacks and the batches send."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Annotated

import httpx
import msgspec

from gateway import jsonbody
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
from gateway.config import SinchConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus
from gateway.signing import timestamp_within

SIGNATURE_HEADER = "x-sinch-webhook-signature"
NONCE_HEADER = "x-sinch-webhook-signature-nonce"
TIMESTAMP_HEADER = "x-sinch-webhook-signature-timestamp"
# Sinch's SDK checks no freshness; the gateway bounds replays the way it does for every carrier.
TOLERANCE_S = 300

# carriers.md §8: the recipient report's `status` onto the target's status.
STATUS_MAP: dict[str, TargetStatus] = {
    "Queued": TargetStatus.SENT,
    "Dispatched": TargetStatus.SENT,
    "Delivered": TargetStatus.DELIVERED,
    "Failed": TargetStatus.FAILED,
    "Rejected": TargetStatus.FAILED,
    "Aborted": TargetStatus.FAILED,
    "Cancelled": TargetStatus.FAILED,
    "Deleted": TargetStatus.FAILED,
    "Expired": TargetStatus.FAILED,
    "Unknown": TargetStatus.DLR_TIMEOUT,
}
# Only these carry an error worth keeping; Queued/Dispatched/Delivered codes restate the status.
ERROR_STATUSES = frozenset({TargetStatus.FAILED, TargetStatus.DLR_TIMEOUT})
INBOUND_TYPE = "mo_text"
REPORT_TYPE = "recipient_delivery_report_sms"


class Kind(msgspec.Struct, frozen=True):
    type: str


class MoText(msgspec.Struct, frozen=True):
    id: str
    from_: str = msgspec.field(name="from")
    to: str
    body: str


class RecipientReport(msgspec.Struct, frozen=True):
    batch_id: str
    recipient: str
    code: int
    status: str
    at: str
    number_of_message_parts: Annotated[int, msgspec.Meta(ge=1, le=255)] | None = None


class BatchRequest(msgspec.Struct, frozen=True):
    from_: str = msgspec.field(name="from")
    to: list[str] = []
    body: str = ""
    delivery_report: str = "per_recipient"
    callback_url: str = ""
    client_reference: str = ""


class BatchResponse(msgspec.Struct, frozen=True):
    id: str


class ErrorResponse(msgspec.Struct, frozen=True):
    code: str = ""
    text: str = ""


_kind_decoder = msgspec.json.Decoder(Kind)
_mo_decoder = msgspec.json.Decoder(MoText)
_report_decoder = msgspec.json.Decoder(RecipientReport)
_batch_decoder = msgspec.json.Decoder(BatchResponse)
_error_decoder = msgspec.json.Decoder(ErrorResponse)
_encoder = msgspec.json.Encoder()


def from_config(section: msgspec.Struct, context: CarrierContext) -> SinchCarrier:
    assert isinstance(section, SinchConfig)
    for key, value in (
        ("service_plan_id", section.service_plan_id),
        ("api_token", section.api_token),
        ("webhook_secret", section.webhook_secret),
    ):
        if not value:
            raise ConfigError(f"[carriers.sinch] {key} must be set")
    return SinchCarrier(section, context.http)


# Verification -------------------------------------------------------------------------------


def sign(secret: str, body: bytes, nonce: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, body + "." + nonce + "." + timestamp))."""
    signed = body + f".{nonce}.{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def verify_signature(secret: str, headers: dict[str, str], body: bytes, now_s: float) -> None:
    """Sinch's HMAC callback signature, with its timestamp within 300 s of now either way."""
    signature = headers.get(SIGNATURE_HEADER)
    nonce = headers.get(NONCE_HEADER)
    timestamp = headers.get(TIMESTAMP_HEADER)
    if not signature or not nonce or timestamp is None:
        raise InvalidSignature("an x-sinch-webhook-signature header is missing")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise InvalidSignature("x-sinch-webhook-signature-timestamp is not a Unix time")
    if not timestamp_within(now_s, int(timestamp), TOLERANCE_S, TOLERANCE_S):
        raise InvalidSignature("x-sinch-webhook-signature-timestamp is outside the tolerance")
    expected = sign(secret, body, nonce, timestamp)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidSignature("x-sinch-webhook-signature does not match")


# Parsing ------------------------------------------------------------------------------------


def parse_callback(body: bytes) -> Callback:
    """An inbound `mo_text` or a per-recipient delivery report; other types are ignored."""
    try:
        kind = jsonbody.decode(_kind_decoder, body).type
        if kind == INBOUND_TYPE:
            return _inbound(_mo_decoder.decode(body))
        if kind == REPORT_TYPE:
            return _report(_report_decoder.decode(body))
    except ValueError as exc:  # jsonbody's NotJson/WrongShape and msgspec's DecodeError
        raise MalformedCallback(f"not a sinch callback: {exc}") from exc
    # No id to key them by: the whole body stands in, so a retry is still one callback.
    return Callback(
        idempotency_key="body:" + hashlib.sha256(body).hexdigest(),
        event=Ignored(f"sinch callback type {kind} is not tracked"),
    )


def _inbound(mo: MoText) -> Callback:
    sms = InboundSms(carrier_message_id=mo.id, source=mo.from_, destination=mo.to, text=mo.body)
    return Callback(idempotency_key=mo.id, event=sms)


def _report(report: RecipientReport) -> Callback:
    status = STATUS_MAP.get(report.status)
    key = f"{report.batch_id}|{report.recipient}|{report.status}|{report.at}"
    if status is None:
        return Callback(key, Ignored(f"sinch status {report.status!r} is not tracked"))
    event = DeliveryReport(
        # The gateway sends one batch per target, so the batch id names the target.
        carrier_message_id=report.batch_id,
        status=status,
        carrier_status=report.status,
        error_code=str(report.code) if status in ERROR_STATUSES else "",
        parts=report.number_of_message_parts,
    )
    return Callback(idempotency_key=key, event=event)


# Sending ------------------------------------------------------------------------------------


def build_send_request(
    config: SinchConfig, submission: Submission
) -> tuple[str, dict[str, str], bytes]:
    """The documented `POST /xms/v1/{service_plan_id}/batches` request: one batch per target."""
    payload = BatchRequest(
        from_=submission.source,
        to=[submission.destination],
        body=submission.text,
        delivery_report="per_recipient",
        callback_url=submission.status_callback_url,
        client_reference=submission.reference,
    )
    url = f"{config.base_url.rstrip('/')}/xms/v1/{config.service_plan_id}/batches"
    headers = {
        "authorization": f"Bearer {config.api_token}",
        "content-type": "application/json",
        "accept": "application/json",
    }
    return url, headers, _encoder.encode(payload)


def read_send_response(status_code: int, body: bytes) -> SendResult:
    """The batch id, or the error that says what to do next."""
    carrier_http.raise_if_transient("sinch", status_code)
    if not 200 <= status_code < 300:
        raise _refusal(status_code, body)
    try:
        batch = _batch_decoder.decode(body)
    except ValueError as exc:  # msgspec.DecodeError, or bytes that are not UTF-8
        raise CarrierTransientError("sinch answered an unreadable body") from exc
    # The batch answer has no status, and parts come only in the delivery report.
    return SendResult(batch.id)


def _refusal(status_code: int, body: bytes) -> CarrierPermanentError:
    try:
        error = _error_decoder.decode(body)
    except ValueError:
        error = ErrorResponse()
    return CarrierPermanentError(
        f"sinch refused the batch ({status_code}): {error.text}",
        error_code=error.code or str(status_code),
    )


class SinchCarrier:
    """Sinch XMS: pure verify/parse plus the HTTP call of a send."""

    name = "sinch"
    ack = Ack()  # any 2xx; other answers are retried with backoff

    def __init__(self, config: SinchConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        verify_signature(self._config.webhook_secret, request.headers, request.body, now_s)

    def parse(self, request: CallbackRequest) -> Callback:
        return parse_callback(request.body)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        request = build_send_request(self._config, submission)
        status_code, body = await carrier_http.post(self._http, "sinch", request, timeout_s)
        return read_send_response(status_code, body)
