"""Delivery log and replay use cases, no HTTP: list, get and resend a customer's webhook
deliveries, recover failed ones in bulk, and the records the API answers with."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated

import msgspec

from gateway.clock import NEVER, format_time, parse_time
from gateway.errors import InvalidArgument, NotFound
from gateway.messages import parse_page_size
from gateway.store import Attempt, DeliveryLog, DeliveryQuery, DeliveryRecord, Store

STATES = ("pending", "delivered", "failed")
DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")  # as events.new_event_id makes them; fullmatch
RECOVER_BATCH = 500


class DeliveryAttempt(msgspec.Struct, frozen=True):
    """One attempt to deliver an event, as logged."""

    attempt_number: int
    trigger: Annotated[str, msgspec.Meta(description="scheduled | manual")]
    tm_attempt: str
    url: Annotated[str, msgspec.Meta(description="the webhook URI, query and fragment removed")]
    status_code: Annotated[int, msgspec.Meta(description="0 when no HTTP answer came")]
    duration_ms: float
    error_class: Annotated[
        str,
        msgspec.Meta(
            description='"" on success; else timeout, connection, redirect, http_4xx, '
            "http_5xx, gone, blocked or no_endpoint"
        ),
    ]
    error: str
    response_excerpt: Annotated[str, msgspec.Meta(description="the start of the answer's body")]


class Delivery(msgspec.Struct, frozen=True):
    """One webhook event on its way to the customer's endpoint (or done with it)."""

    id: Annotated[str, msgspec.Meta(description="the event's webhook-id header, msg_...")]
    message_id: str
    type: Annotated[
        str, msgspec.Meta(description="message_created | message_updated | message_deleted")
    ]
    state: Annotated[str, msgspec.Meta(description="pending | delivered | failed")]
    attempt_count: int
    next_attempt_at: Annotated[str, msgspec.Meta(description='"" when no attempt is due')]
    last_error: str
    tm_create: str
    tm_update: str


class DeliveryDetail(Delivery, frozen=True):
    """A delivery with its attempt log, oldest attempt first."""

    attempts: tuple[DeliveryAttempt, ...]


class DeliveryPage(msgspec.Struct, frozen=True):
    result: tuple[Delivery, ...]
    next_page_token: str


# Parsing the caller's input ----------------------------------------------------------------------


def parse_delivery_id(raw: str) -> str:
    if not DELIVERY_ID.fullmatch(raw):
        raise InvalidArgument("INVALID_ID", "delivery id must be msg_ and 32 hex digits")
    return raw


def parse_list_query(customer_id: str, params: Mapping[str, str]) -> DeliveryQuery:
    """The query string of `GET /v1.0/webhook_deliveries`."""
    state = params.get("state")
    if state is not None and state not in STATES:
        raise _bad_parameter(f"state must be one of {', '.join(STATES)}")
    return DeliveryQuery(
        customer_id=customer_id,
        limit=parse_page_size(params.get("page_size")) + 1,  # one more tells if a page follows
        message_id=_message_filter(params.get("message_id")),
        state=state,
        before=parse_page_token(params.get("page_token", "")),
    )


def _message_filter(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise _bad_parameter("message_id must be a message id (UUID)") from exc


def parse_page_token(token: str) -> tuple[str, str | None] | None:
    """`tm_create|id` as this gateway issues, or a plain tm_create (deliveries before it)."""
    if not token:
        return None
    tm_create, _, delivery_id = token.partition("|")
    try:
        # Compared as text in the store, so the time is put in its one canonical form.
        tm_create = format_time(parse_time(tm_create))
    except ValueError as exc:
        raise _bad_parameter("page_token must be a next_page_token or a tm_create time") from exc
    if delivery_id and not DELIVERY_ID.fullmatch(delivery_id):
        raise _bad_parameter("page_token must be a next_page_token or a tm_create time")
    return tm_create, delivery_id or None


def parse_since(text: str) -> str:
    """A recovery's start: `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC, or ISO 8601 (naive is UTC)."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time like 2026-01-31 12:00:00 or ISO 8601") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return format_time(moment)


def _bad_parameter(message: str) -> InvalidArgument:
    return InvalidArgument("INVALID_REQUEST_PARAMETER", message)


# Use cases ---------------------------------------------------------------------------------------


async def list_page(store: Store, query: DeliveryQuery) -> DeliveryPage:
    rows = await DeliveryLog(store).page(query)
    page = rows[: query.limit - 1]
    more = len(rows) >= query.limit
    token = f"{page[-1].tm_create}|{page[-1].event_id}" if page and more else ""
    return DeliveryPage(result=tuple(delivery_of(row) for row in page), next_page_token=token)


async def get(store: Store, customer_id: str, raw_id: str) -> DeliveryDetail:
    found = await DeliveryLog(store).get(parse_delivery_id(raw_id))
    if found is None or found[0].customer_id != customer_id:
        raise NotFound("DELIVERY_NOT_FOUND", "no such delivery")
    return detail_of(*found)


async def resend(store: Store, customer_id: str, raw_id: str, now: dt.datetime) -> Delivery:
    """Queue the delivery again, due now, with its webhook-id unchanged."""
    delivery_id = parse_delivery_id(raw_id)
    record = await DeliveryLog(store).requeue(delivery_id, customer_id, format_time(now))
    if record is None:
        raise NotFound("DELIVERY_NOT_FOUND", "no such delivery")
    return delivery_of(record)


async def of_message(store: Store, message_id: str) -> list[DeliveryDetail]:
    return [detail_of(*found) for found in await DeliveryLog(store).of_message(message_id)]


async def recover(
    store: Store,
    since: str,
    now: dt.datetime,
    customer_id: str | None = None,
    *,
    batch_size: int = RECOVER_BATCH,
    on_batch: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Requeue every delivery that failed and was created at or after `since`, one short
    transaction per batch (a running gateway keeps working); `on_batch(done, total)` after each."""
    log = DeliveryLog(store)
    failed, total = await log.failed_range(since, customer_id)
    done, after_seq = 0, 0
    while True:
        count, after_seq = await log.requeue_failed(failed, after_seq, batch_size, format_time(now))
        if count:
            done += count
            on_batch(done, total)
        if count < batch_size:
            return done


# Records -> API ----------------------------------------------------------------------------------


def delivery_of(record: DeliveryRecord) -> Delivery:
    due = record.state == "pending" and record.next_attempt_at != NEVER
    return Delivery(
        id=record.event_id,
        message_id=record.message_id,
        type=record.event_type,
        state=record.state,
        attempt_count=record.attempts,
        next_attempt_at=record.next_attempt_at if due else "",
        last_error=record.last_error,
        tm_create=record.tm_create,
        tm_update=record.tm_update,
    )


def detail_of(record: DeliveryRecord, attempts: list[Attempt]) -> DeliveryDetail:
    delivery = delivery_of(record)
    logged = tuple(
        DeliveryAttempt(
            attempt_number=a.attempt_number,
            trigger=a.trigger,
            tm_attempt=a.tm_attempt,
            url=a.url,
            status_code=a.status_code,
            duration_ms=a.duration_ms,
            error_class=a.error_class,
            error=a.error,
            response_excerpt=a.response_excerpt,
        )
        for a in attempts
    )
    return DeliveryDetail(**msgspec.structs.asdict(delivery), attempts=logged)
