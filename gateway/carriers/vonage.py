"""The Vonage legacy SMS API adapter: signed callbacks (GET, form or JSON) and `/sms/json` sends."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Annotated
from urllib.parse import parse_qsl, urlsplit

import httpx
import msgspec

from gateway import jsonbody, segments
from gateway.carriers import http as carrier_http
from gateway.carriers.base import (
    Ack,
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
from gateway.config import VonageConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    InvalidSignature,
    MalformedCallback,
)
from gateway.models import TargetStatus
from gateway.signing import timestamp_within

SEND_PATH = "/sms/json"
# The SDKs check no freshness; `timestamp` is signed, so the gateway bounds it itself. Vonage
# retries an unanswered callback for 24 h keeping the time it first pushed it, so a 5-minute window
# would refuse every retry after an outage: accept a day and an hour back, five minutes ahead.
# Replays within the window are harmless: the idempotency keys drop them.
MAX_AGE_S = 25 * 3600
MAX_AHEAD_S = 300
MAX_CLIENT_REF = 100
SEND_OK = "0"
SEND_THROTTLED = "1"
NO_ERROR = "0"

# Receipt statuses (carriers.md section 8); anything else is authentic but not tracked.
RECEIPT_STATUSES = {
    "accepted": TargetStatus.SENT,
    "buffered": TargetStatus.SENT,
    "delivered": TargetStatus.DELIVERED,
    "failed": TargetStatus.FAILED,
    "rejected": TargetStatus.FAILED,
    "expired": TargetStatus.FAILED,
    "unknown": TargetStatus.DLR_TIMEOUT,
}

PartNumber = Annotated[int, msgspec.Meta(ge=1, le=255)]  # one octet in the concatenation header
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class InboundParams(msgspec.Struct, frozen=True, rename="kebab"):
    msisdn: NonEmpty
    to: NonEmpty
    message_id: NonEmpty = msgspec.field(name="messageId")
    type: str = "text"
    text: str = ""
    concat: bool = False
    concat_ref: str = ""
    concat_total: PartNumber | None = None
    concat_part: PartNumber | None = None


class ReceiptParams(msgspec.Struct, frozen=True, rename="kebab"):
    message_id: NonEmpty = msgspec.field(name="messageId")
    status: NonEmpty
    err_code: str = ""
    scts: str = ""


class SmsRequest(msgspec.Struct, frozen=True, rename="kebab"):
    api_key: str = msgspec.field(name="api_key")
    api_secret: str = msgspec.field(name="api_secret")
    from_: str = msgspec.field(name="from")
    to: str = ""
    text: str = ""
    type: str = "text"
    callback: str = ""
    status_report_req: int = 1
    client_ref: str = ""


class SentPart(msgspec.Struct, frozen=True, rename="kebab"):
    status: str
    message_id: str = ""
    error_text: str = ""


class SendResponse(msgspec.Struct, frozen=True, rename="kebab"):
    messages: list[SentPart]
    message_count: int | None = None


class UnreadableParams(ValueError):
    """The request does not carry a flat set of Vonage parameters."""


_json_params_decoder = msgspec.json.Decoder(dict[str, str | int])
_send_response_decoder = msgspec.json.Decoder(SendResponse, strict=False)
_encoder = msgspec.json.Encoder()


# Callbacks -------------------------------------------------------------------------------------


def callback_params(request: CallbackRequest) -> dict[str, str]:
    """The parameters Vonage sent: a GET's query string, else the form or JSON body."""
    if request.method == "GET":
        query = urlsplit(request.url).query
        return _unique(parse_qsl(query, keep_blank_values=True, errors="strict"))
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        values = jsonbody.decode(_json_params_decoder, request.body)
        # The SDKs sign a number as its decimal text; booleans and nesting never occur.
        return {key: str(value) for key, value in values.items()}
    if media_type == "application/x-www-form-urlencoded":
        text = request.body.decode("utf-8")
        return _unique(parse_qsl(text, keep_blank_values=True, errors="strict"))
    raise UnreadableParams(f"unexpected {request.method} content type {media_type!r}")


def _unique(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in pairs:
        # A repeated key would let the signed value and the parsed value differ.
        if key in params:
            raise UnreadableParams(f"parameter {key!r} is repeated")
        params[key] = value
    return params


def signing_string(params: Mapping[str, str]) -> str:
    """`&key=value` for every parameter but `sig`, sorted by key, `&` and `=` in values as `_`."""
    return "".join(
        f"&{key}={params[key].replace('&', '_').replace('=', '_')}"
        for key in sorted(params)
        if key != "sig"
    )


def signature(params: Mapping[str, str], secret: str, method: str) -> str:
    """The lower-case hex `sig` Vonage computes for `params` with `signature_method`."""
    signed = signing_string(params)
    if method == "md5hash":
        # Vonage's dashboard default: a plain hash of string + secret, not an HMAC.
        return hashlib.md5((signed + secret).encode()).hexdigest()  # noqa: S324
    # The other methods are HMACs named as hashlib names them: md5, sha1, sha256, sha512.
    return hmac.new(secret.encode(), signed.encode(), method).hexdigest()


def verify_params(params: Mapping[str, str], secret: str, method: str, now_s: float) -> None:
    """Raise InvalidSignature unless `sig` signs `params` and `timestamp` is in the window."""
    given = params.get("sig", "")
    if not given:
        raise InvalidSignature("sig is missing")
    try:
        timestamp_s = int(params.get("timestamp", ""))
    except ValueError as exc:
        raise InvalidSignature("timestamp is missing or not an integer") from exc
    if not timestamp_within(now_s, timestamp_s, MAX_AGE_S, MAX_AHEAD_S):
        raise InvalidSignature("timestamp is outside the accepted window (25 h back, 5 min ahead)")
    expected = signature(params, secret, method)
    # Some Vonage libraries emit upper-case hex.
    if not hmac.compare_digest(given.lower().encode(), expected.encode()):
        raise InvalidSignature("sig does not match")


def parse_params(params: Mapping[str, str]) -> Callback:
    """An inbound SMS or a delivery receipt (a receipt is the one with a `status`)."""
    try:
        if "status" in params:
            return _receipt(msgspec.convert(params, ReceiptParams, strict=False))
        return _inbound(msgspec.convert(params, InboundParams, strict=False))
    except msgspec.ValidationError as exc:
        raise MalformedCallback(f"not a Vonage callback: {exc}") from exc


def _receipt(receipt: ReceiptParams) -> Callback:
    key = "|".join((receipt.message_id, receipt.status, receipt.err_code, receipt.scts))
    status = RECEIPT_STATUSES.get(receipt.status)
    if status is None:
        return Callback(key, Ignored(f"Vonage receipt status {receipt.status!r} is not tracked"))
    report = DeliveryReport(
        carrier_message_id=receipt.message_id,
        status=status,
        carrier_status=receipt.status,
        error_code="" if receipt.err_code == NO_ERROR else receipt.err_code,
    )
    return Callback(key, report)


def _inbound(params: InboundParams) -> Callback:
    if params.type == "binary":
        return Callback(params.message_id, Ignored("binary inbound SMS is not supported"))
    sms = InboundSms(
        carrier_message_id=params.message_id,
        source=from_vonage_number(params.msisdn),
        destination=from_vonage_number(params.to),
        text=params.text,
        concat=_concat(params),
    )
    return Callback(params.message_id, sms)


def _concat(params: InboundParams) -> Concat | None:
    if not params.concat:
        return None
    total, part = params.concat_total, params.concat_part
    if not params.concat_ref or total is None or part is None or part > total:
        raise MalformedCallback("concat=true needs concat-ref, concat-total and concat-part")
    return Concat(params.concat_ref, total, part)


def from_vonage_number(value: str) -> str:
    """Vonage writes E.164 without `+`; alphanumeric senders stay as they are."""
    return "+" + value if value.isascii() and value.isdigit() else value


def to_vonage_number(number: str) -> str:
    return number.removeprefix("+")


# Send ------------------------------------------------------------------------------------------


def build_send_request(
    config: VonageConfig, submission: Submission
) -> tuple[str, dict[str, str], bytes]:
    """`POST {base_url}/sms/json` as JSON (the API also takes a form); credentials in the body."""
    encoding = segments.analyse(submission.text).encoding
    payload = SmsRequest(
        api_key=config.api_key,
        api_secret=config.api_secret,
        from_=to_vonage_number(submission.source),
        to=to_vonage_number(submission.destination),
        text=submission.text,
        type="unicode" if encoding is segments.Encoding.UCS2 else "text",
        callback=submission.status_callback_url,
        client_ref=submission.reference[:MAX_CLIENT_REF],
    )
    headers = {"content-type": "application/json", "accept": "application/json"}
    return config.base_url.rstrip("/") + SEND_PATH, headers, _encoder.encode(payload)


def read_send_response(status_code: int, body: bytes) -> SendResult:
    """One entry per part; Vonage reports refusals inside HTTP 200."""
    carrier_http.raise_if_transient("Vonage", status_code)
    if not 200 <= status_code < 300:
        raise CarrierPermanentError(
            f"Vonage refused the request ({status_code})", error_code=str(status_code)
        )
    try:
        answer = jsonbody.decode(_send_response_decoder, body)
    except ValueError as exc:
        raise CarrierTransientError("Vonage answered an unreadable body") from exc
    return _accepted(answer)


def _accepted(answer: SendResponse) -> SendResult:
    parts = answer.messages
    # A permanent refusal of any part fails the whole target, even when other parts went out:
    # the recipient could not read the SMS, and a retry would resend the parts already sent.
    for part in parts:
        if part.status not in (SEND_OK, SEND_THROTTLED):
            raise CarrierPermanentError(
                f"Vonage refused the message: {part.error_text[:100]}", error_code=part.status
            )
    if any(part.status == SEND_THROTTLED for part in parts):
        raise CarrierTransientError("Vonage throttled the message")
    part_ids = tuple(part.message_id for part in parts)
    if not part_ids or not all(part_ids):
        raise CarrierTransientError("Vonage answered without a message-id per part")
    count = answer.message_count or len(part_ids)
    return SendResult(part_ids[0], parts=count, carrier_status=SEND_OK, part_ids=part_ids)


# The adapter -----------------------------------------------------------------------------------


def from_config(section: msgspec.Struct, context: CarrierContext) -> VonageCarrier:
    assert isinstance(section, VonageConfig)
    for key, why in (
        ("api_key", "it authenticates sends"),
        ("api_secret", "it authenticates sends"),
        ("signature_secret", "the gateway never accepts unsigned Vonage callbacks"),
    ):
        if not getattr(section, key):
            raise ConfigError(f"[carriers.vonage] {key} must be set: {why}")
    return VonageCarrier(section, context.http)


class VonageCarrier:
    """Vonage's SMS API behind the Carrier protocol."""

    name = "vonage"
    ack = Ack(status_code=200, content_type="text/plain", body=b"")

    def __init__(self, config: VonageConfig, http: httpx.AsyncClient) -> None:
        self._config = config
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        try:
            params = callback_params(request)
        except ValueError as exc:
            raise InvalidSignature("no signed Vonage parameters could be read") from exc
        verify_params(params, self._config.signature_secret, self._config.signature_method, now_s)

    def parse(self, request: CallbackRequest) -> Callback:
        try:
            params = callback_params(request)
        except ValueError as exc:
            raise MalformedCallback(f"not a Vonage callback: {exc}") from exc
        return parse_params(params)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        request = build_send_request(self._config, submission)
        status_code, body = await carrier_http.post(self._http, "Vonage", request, timeout_s)
        return read_send_response(status_code, body)
