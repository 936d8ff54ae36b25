"""The built-in sandbox carrier: the adapter, plus the simulated carrier API it talks to.

Wire format (documented in the README):
- Submit: `POST {base_url}/sandbox/v1/messages`, `Authorization: Bearer <secret>`, JSON
  `{"from", "to", "text", "status_callback", "reference"}` -> 200 `{"id", "status", "parts"}`.
- Callbacks to `/hooks/sandbox`: JSON tagged by `event` (`inbound` or `status`), signed with
  `X-Sandbox-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`, 300 s tolerance.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hmac
import logging
import uuid
from collections.abc import Coroutine
from typing import Annotated, Any, Literal

import httpx
import msgspec

from gateway import jsonbody, segments, signing
from gateway.carriers import http as carrier_http
from gateway.carriers.base import (
    Ack,
    Callback,
    CallbackRequest,
    CarrierContext,
    DeliveryReport,
    InboundSms,
    SendResult,
    Submission,
)
from gateway.clock import Clock
from gateway.config import SandboxConfig
from gateway.errors import (
    CarrierPermanentError,
    CarrierTransientError,
    ConfigError,
    MalformedCallback,
)
from gateway.models import TargetStatus

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-sandbox-signature"
SUBMIT_PATH = "/sandbox/v1/messages"
MAX_PARTS = 255  # the concatenation header counts parts in one octet


class InboundEvent(msgspec.Struct, frozen=True, tag="inbound", tag_field="event"):
    id: str
    from_: str = msgspec.field(name="from")
    to: str = ""
    text: str = ""


class StatusEvent(msgspec.Struct, frozen=True, tag="status", tag_field="event"):
    id: str
    message_id: str
    status: Literal["delivered", "failed"]
    error_code: str = ""
    parts: Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTS)] | None = None


class SubmitRequest(msgspec.Struct, frozen=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    text: str = ""
    status_callback: str = ""
    reference: str = ""


class SubmitResponse(msgspec.Struct, frozen=True):
    id: str
    status: str
    parts: int


_callback_decoder = msgspec.json.Decoder(InboundEvent | StatusEvent)
_submit_decoder = msgspec.json.Decoder(SubmitRequest)
_submit_response_decoder = msgspec.json.Decoder(SubmitResponse)
_encoder = msgspec.json.Encoder()


def signed_callback(
    secret: str, event: InboundEvent | StatusEvent, now_s: float
) -> tuple[bytes, str]:
    """The body and X-Sandbox-Signature value for one callback."""
    body = _encoder.encode(event)
    return body, signing.sign_sandbox(secret, int(now_s), body)


def from_config(section: msgspec.Struct, context: CarrierContext) -> SandboxCarrier:
    assert isinstance(section, SandboxConfig)
    if not section.secret:
        raise ConfigError("[carriers.sandbox] secret must be set: it signs the callbacks")
    base_url = section.base_url or context.public_url
    return SandboxCarrier(section, base_url, context.http)


class SandboxCarrier:
    """The adapter the gateway uses, exactly as it would use a real carrier's."""

    name = "sandbox"
    ack = Ack()

    def __init__(self, config: SandboxConfig, base_url: str, http: httpx.AsyncClient) -> None:
        self._secret = config.secret
        self._submit_url = base_url.rstrip("/") + SUBMIT_PATH
        self._http = http

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        header = request.headers.get(SIGNATURE_HEADER)
        if header is None:
            raise signing.InvalidSignature("X-Sandbox-Signature is missing")
        signing.verify_sandbox(self._secret, header, request.body, now_s)

    def parse(self, request: CallbackRequest) -> Callback:
        try:
            event = jsonbody.decode(_callback_decoder, request.body)
        except ValueError as exc:
            raise MalformedCallback(f"not a sandbox callback: {exc}") from exc
        if isinstance(event, InboundEvent):
            sms = InboundSms(event.id, event.from_, event.to, event.text)
            return Callback(idempotency_key=event.id, event=sms)
        report = DeliveryReport(
            carrier_message_id=event.message_id,
            status=TargetStatus(event.status),
            carrier_status=event.status,
            error_code=event.error_code,
            parts=event.parts,
        )
        return Callback(idempotency_key=event.id, event=report)

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        payload = SubmitRequest(
            from_=submission.source,
            to=submission.destination,
            text=submission.text,
            status_callback=submission.status_callback_url,
            reference=submission.reference,
        )
        headers = {"authorization": f"Bearer {self._secret}", "content-type": "application/json"}
        request = (self._submit_url, headers, _encoder.encode(payload))
        status_code, body = await carrier_http.post(self._http, "sandbox", request, timeout_s)
        return _read_submit_response(status_code, body)


def _read_submit_response(status_code: int, body: bytes) -> SendResult:
    carrier_http.raise_if_transient("sandbox", status_code)
    if status_code != 200:
        raise CarrierPermanentError(
            f"sandbox refused the message ({status_code})",
            error_code=str(status_code),
        )
    try:
        accepted = _submit_response_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise CarrierTransientError("sandbox answered an unreadable body") from exc
    return SendResult(accepted.id, parts=accepted.parts, carrier_status=accepted.status)


class SandboxSimulator:
    """The simulated remote carrier: accepts submissions, later POSTs signed delivery reports."""

    def __init__(self, config: SandboxConfig, http: httpx.AsyncClient, clock: Clock) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def authorised(self, authorization: str) -> bool:
        expected = f"Bearer {self._config.secret}".encode()
        return hmac.compare_digest(authorization.encode(), expected)

    def accept(self, body: bytes) -> SubmitResponse:
        """Take a submission (jsonbody.NotJson / WrongShape on a bad one); schedule its report."""
        submission = jsonbody.decode(_submit_decoder, body)
        carrier_message_id = f"sbx_{uuid.uuid4().hex}"
        report = StatusEvent(
            id=f"sbx_dlr_{uuid.uuid4().hex}",
            message_id=carrier_message_id,
            status="delivered",
            parts=segments.count_parts(submission.text),
        )
        if self._fails(submission.to):
            report = msgspec.structs.replace(
                report, status="failed", error_code=self._config.fail_error_code
            )
        if submission.status_callback:
            self._spawn(self._report_later(submission.status_callback, report))
        return SubmitResponse(carrier_message_id, "accepted", report.parts or 1)

    def _fails(self, destination: str) -> bool:
        return any(
            fnmatch.fnmatchcase(destination, rule) for rule in self._config.fail_destinations
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report_later(self, url: str, report: StatusEvent) -> None:
        await asyncio.sleep(self._config.dlr_delay_s)
        # Like real carriers, retry a report the gateway did not take, a few times.
        for delay_s in (0.0, 1.0, 5.0):
            await asyncio.sleep(delay_s)
            body, signature = signed_callback(
                self._config.secret, report, self._clock.now().timestamp()
            )
            try:
                response = await self._http.post(
                    url,
                    content=body,
                    timeout=10.0,
                    headers={SIGNATURE_HEADER: signature, "content-type": "application/json"},
                )
            except httpx.HTTPError as exc:
                log.warning("sandbox report to %s failed: %s", url, type(exc).__name__)
                continue
            if response.is_success:
                return
        log.warning("sandbox gave up reporting %s", report.message_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
