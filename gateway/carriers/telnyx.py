"""The Telnyx (API v2 Messaging) adapter: Ed25519-signed JSON callbacks and `POST /v2/messages`."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import httpx
import msgspec
from cryptography.exceptions import InvalidSignature as BadEd25519Signature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
from gateway.config import TelnyxConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus
from gateway.signing import timestamp_within

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
SEND_PATH = "/v2/messages"
TOLERANCE_S = 300
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

# carriers.md §8: `to[i].status` onto the target's status. `webhook_delivered` and `received`
# belong to inbound messages and are not tracked.
STATUS_MAP: dict[str, TargetStatus] = {
    "queued": TargetStatus.SENT,
    "sending": TargetStatus.SENT,
    "sent": TargetStatus.SENT,
    "scheduled": TargetStatus.SENT,
    "delivered": TargetStatus.DELIVERED,
    "delivery_failed": TargetStatus.FAILED,
    "sending_failed": TargetStatus.FAILED,
    "expired": TargetStatus.FAILED,
    "cancelled": TargetStatus.FAILED,
    "delivery_unconfirmed": TargetStatus.DLR_TIMEOUT,
}
REPORT_EVENTS = frozenset({"message.sent", "message.finalized"})
INBOUND_EVENT = "message.received"

Parts = Annotated[int, msgspec.Meta(ge=1, le=255)]


class Party(msgspec.Struct, frozen=True):
    phone_number: str
    status: str = ""


class TelnyxError(msgspec.Struct, frozen=True):
    code: str | int = ""
    title: str = ""
    detail: str = ""


class InboundPayload(msgspec.Struct, frozen=True):
    id: str
    from_: Party = msgspec.field(name="from")
    to: Annotated[list[Party], msgspec.Meta(min_length=1)]
    text: str | None = ""  # an MMS may come without text
    parts: Parts | None = None


class OutboundPayload(msgspec.Struct, frozen=True):
    id: str
    to: Annotated[list[Party], msgspec.Meta(min_length=1)]
    errors: list[TelnyxError] = []
    parts: Parts | None = None


class EventData(msgspec.Struct, frozen=True):
    id: str
    event_type: str
    payload: msgspec.Raw  # its shape depends on event_type; events we ignore may differ


class Envelope(msgspec.Struct, frozen=True):
    data: EventData


class SendRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    text: str = ""
    webhook_url: str = ""
    messaging_profile_id: str = ""


class SentMessage(msgspec.Struct, frozen=True):
    id: str
    to: list[Party] = []
    parts: int | None = None


class SendResponse(msgspec.Struct, frozen=True):
    data: SentMessage


class ErrorResponse(msgspec.Struct, frozen=True):
    errors: list[TelnyxError] = []


_envelope_decoder = msgspec.json.Decoder(Envelope)
_inbound_decoder = msgspec.json.Decoder(InboundPayload)
_outbound_decoder = msgspec.json.Decoder(OutboundPayload)
_send_response_decoder = msgspec.json.Decoder(SendResponse)
_error_response_decoder = msgspec.json.Decoder(ErrorResponse)
_encoder = msgspec.json.Encoder()


def from_config(section: msgspec.Struct, context: CarrierContext) -> TelnyxCarrier:
    assert isinstance(section, TelnyxConfig)
    if not section.api_key:
        raise ConfigError("[carriers.telnyx] api_key must be set: it authorises sends")
    return TelnyxCarrier(section, load_public_key(section.public_key), context.http)


def load_public_key(encoded: str) -> Ed25519PublicKey:
    """The account's Ed25519 key from its base64 form (Mission Control -> API keys)."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ConfigError(
            "[carriers.telnyx] public_key must be the base64 Ed25519 public key (32 bytes)"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


# Verification -------------------------------------------------------------------------------


def verify_signature(
    public_key: Ed25519PublicKey, headers: dict[str, str], body: bytes, now_s: float
) -> None:
    """Ed25519 over `timestamp|body`, the timestamp within 300 s of now either way."""
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature_b64 = headers.get(SIGNATURE_HEADER)
    if timestamp is None or signature_b64 is None:
        raise InvalidSignature("telnyx-signature-ed25519 or telnyx-timestamp is missing")
    if not (timestamp.isascii() and timestamp.isdigit()):
        raise InvalidSignature("telnyx-timestamp is not a Unix time")
    if not timestamp_within(now_s, int(timestamp), TOLERANCE_S, TOLERANCE_S):
        raise InvalidSignature("telnyx-timestamp is outside the 5-minute tolerance")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except binascii.Error as exc:
        raise InvalidSignature("telnyx-signature-ed25519 is not base64") from exc
    if len(signature) != SIGNATURE_BYTES:
        raise InvalidSignature("telnyx-signature-ed25519 is not an Ed25519 signature")
    try:
        public_key.verify(signature, timestamp.encode() + b"|" + body)
    except BadEd25519Signature as exc:
        raise InvalidSignature("telnyx-signature-ed25519 does not match") from exc


# Parsing ------------------------------------------------------------------------------------


def parse_callback(body: bytes) -> Callback:
    """A Telnyx webhook into a Callback keyed by its event id (`data.id`)."""
    try:
        data = jsonbody.decode(_envelope_decoder, body).data
        if data.event_type == INBOUND_EVENT:
            event: InboundSms | DeliveryReport | Ignored = _inbound(
                _inbound_decoder.decode(data.payload)
            )
        elif data.event_type in REPORT_EVENTS:
            event = _report(_outbound_decoder.decode(data.payload))
        else:
            event = Ignored(f"telnyx event {data.event_type} is not tracked")
    except ValueError as exc:  # jsonbody's NotJson/WrongShape and msgspec's DecodeError
        raise MalformedCallback(f"not a telnyx messaging webhook: {exc}") from exc
    return Callback(idempotency_key=data.id, event=event)


def _inbound(payload: InboundPayload) -> InboundSms:
    return InboundSms(
        carrier_message_id=payload.id,
        source=payload.from_.phone_number,
        destination=payload.to[0].phone_number,
        text=payload.text or "",
        parts=payload.parts,
    )


def _report(payload: OutboundPayload) -> DeliveryReport | Ignored:
    # The gateway sends to one destination per message, so to[0] is its recipient.
    raw_status = payload.to[0].status
    status = STATUS_MAP.get(raw_status)
    if status is None:
        return Ignored(f"telnyx status {raw_status!r} is not tracked")
    return DeliveryReport(
        carrier_message_id=payload.id,
        status=status,
        carrier_status=raw_status,
        error_code=str(payload.errors[0].code) if payload.errors else "",
        parts=payload.parts,
    )


# Sending ------------------------------------------------------------------------------------


def build_send_request(
    config: TelnyxConfig, submission: Submission
) -> tuple[str, dict[str, str], bytes]:
    """The documented `POST /v2/messages` request for one submission."""
    payload = SendRequest(
        from_=submission.source,
        to=submission.destination,
        text=submission.text,
        webhook_url=submission.status_callback_url,
        messaging_profile_id=config.messaging_profile_id,
    )
    headers = {
        "authorization": f"Bearer {config.api_key}",
        "content-type": "application/json",
        "accept": "application/json",
    }
    return config.base_url.rstrip("/") + SEND_PATH, headers, _encoder.encode(payload)


def read_send_response(status_code: int, body: bytes) -> SendResult:
    """The carrier message id and part count, or the error that says what to do next."""
    carrier_http.raise_if_transient("telnyx", status_code)
    if not 200 <= status_code < 300:
        raise _refusal(status_code, body)
    try:
        sent = _send_response_decoder.decode(body).data
    except ValueError as exc:  # msgspec.DecodeError, or bytes that are not UTF-8
        raise CarrierTransientError("telnyx answered an unreadable body") from exc
    status = sent.to[0].status if sent.to else ""
    return SendResult(sent.id, parts=sent.parts, carrier_status=status or "queued")


def _refusal(status_code: int, body: bytes) -> CarrierPermanentError:
    try:
        errors = _error_response_decoder.decode(body).errors
    except ValueError:
        errors = []
    if not errors:
        return CarrierPermanentError(
            f"telnyx refused the message ({status_code})", error_code=str(status_code)
        )
    first = errors[0]
    return CarrierPermanentError(
        f"telnyx refused the message ({status_code}): {first.title}",
        error_code=str(first.code) or str(status_code),
    )


class TelnyxCarrier:
    """Telnyx API v2: pure verify/parse plus the HTTP call of a send."""

    name = "telnyx"
    ack = Ack()  # any 2xx within 2 s; the body is not read

    def __init__(
        self, config: TelnyxConfig, public_key: Ed25519PublicKey, http: httpx.AsyncClient
    ) -> None:
        self._config = config
        self._public_key = public_key
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        verify_signature(self._public_key, request.headers, request.body, now_s)

    def parse(self, request: CallbackRequest) -> Callback:
        return parse_callback(request.body)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        request = build_send_request(self._config, submission)
        status_code, body = await carrier_http.post(self._http, "telnyx", request, timeout_s)
        return read_send_response(status_code, body)
