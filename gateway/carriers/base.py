"""The Carrier protocol and the typed records every carrier adapter produces and consumes."""

from __future__ import annotations

from typing import Protocol

import msgspec

from gateway.models import TargetStatus


class CallbackRequest(msgspec.Struct, frozen=True):
    """A carrier's HTTP request as it arrived: what signatures are computed over."""

    method: str
    url: str  # public_url + path + query, the address the carrier called
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes


class InboundSms(msgspec.Struct, frozen=True):
    carrier_message_id: str
    source: str
    destination: str
    text: str
    parts: int | None = None


class DeliveryReport(msgspec.Struct, frozen=True):
    carrier_message_id: str
    status: TargetStatus
    carrier_status: str
    error_code: str = ""
    parts: int | None = None


class Callback(msgspec.Struct, frozen=True):
    """One parsed callback: the key that identifies it for deduplication and what it says."""

    idempotency_key: str
    event: InboundSms | DeliveryReport


class Ack(msgspec.Struct, frozen=True):
    """What the carrier expects back once the callback is stored."""

    status_code: int = 200
    content_type: str = "application/json"
    body: bytes = b'{"ok":true}'


class Submission(msgspec.Struct, frozen=True):
    source: str
    destination: str
    text: str
    status_callback_url: str
    reference: str  # the gateway's own id for this target, for the carrier's idempotency


class SendResult(msgspec.Struct, frozen=True):
    carrier_message_id: str
    parts: int | None = None
    carrier_status: str = ""


class Carrier(Protocol):
    """One SMS carrier: pure verify/parse of its callbacks plus an async send."""

    name: str
    ack: Ack

    def verify(self, request: CallbackRequest, now_s: float) -> None:
        """Raise errors.InvalidSignature unless the carrier signed this request."""
        ...

    def parse(self, request: CallbackRequest) -> Callback:
        """Raise MalformedCallback when the request is not a callback this carrier sends."""
        ...

    async def send(self, submission: Submission, timeout_s: float) -> SendResult:
        """Submit one SMS; raise CarrierTransientError or CarrierPermanentError on failure."""
        ...
