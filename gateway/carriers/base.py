"""The Carrier protocol and the typed records every carrier adapter produces and consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import httpx
import msgspec

from gateway.clock import Clock
from gateway.models import TargetStatus


class CallbackRequest(msgspec.Struct, frozen=True):
    """A carrier's HTTP request as it arrived: what signatures are computed over."""

    method: str
    url: str  # public_url + path + query, the address the carrier called
    headers: dict[str, str]  # lower-case names
    query: dict[str, str]
    body: bytes


class Concat(msgspec.Struct, frozen=True):
    """One part of an inbound SMS that the carrier delivers part by part (Vonage)."""

    ref: str  # the carrier's reference shared by all parts of one SMS
    total: int
    part: int  # 1-based


# Tagged: callbacks wait in the inbox as JSON (gateway/ingest.py). The tags are stored, so they
# must not change, or callbacks waiting across an upgrade could not be read.
class InboundSms(msgspec.Struct, frozen=True, tag="inbound_sms"):
    carrier_message_id: str
    source: str
    destination: str
    text: str
    parts: int | None = None
    concat: Concat | None = None


class DeliveryReport(msgspec.Struct, frozen=True, tag="delivery_report"):
    carrier_message_id: str
    status: TargetStatus
    carrier_status: str
    error_code: str = ""
    parts: int | None = None


class Ignored(msgspec.Struct, frozen=True, tag="ignored"):
    """An authentic callback that carries nothing to track (e.g. an event type we do not use)."""

    reason: str


class Callback(msgspec.Struct, frozen=True):
    """One parsed callback: the key that identifies it for deduplication and what it says."""

    idempotency_key: str
    event: InboundSms | DeliveryReport | Ignored


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
    # Carriers that report each part separately (Vonage) give one id per part; the target is
    # delivered when every part is, failed when any part fails.
    part_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CarrierContext:
    """What an adapter may use: the shared HTTP client, the gateway's address, the clock."""

    http: httpx.AsyncClient
    public_url: str
    clock: Clock


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
