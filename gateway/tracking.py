"""Target tracking, no HTTP: carrier callbacks and dispatch results become message changes.

Every change commits together with its outbox event, so an acknowledged callback is never lost.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable

import msgspec

from gateway import segments
from gateway.carriers.base import Callback, DeliveryReport, InboundSms, SendResult
from gateway.clock import Clock, format_time
from gateway.events import new_event_id, should_notify
from gateway.models import (
    Address,
    Direction,
    EventType,
    Message,
    Target,
    TargetStatus,
    advance_status,
)
from gateway.store import DispatchJob, PendingReport, Store, TargetRef, Tx


class Outcome(enum.StrEnum):
    """What a callback did; also the `outcome` label of the callback metric."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"  # a report that would move a status backwards
    UNROUTED = "unrouted"  # inbound SMS to a number nobody owns, kept for the operator
    EARLY = "early"  # a report for a send not yet recorded, applied once it is


class Change(msgspec.Struct, frozen=True):
    status: TargetStatus
    carrier_status: str = ""
    error_code: str = ""
    parts: int | None = None


class Tracker:
    def __init__(self, store: Store, clock: Clock, on_commit: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self._on_commit = on_commit

    async def accept_callback(self, carrier: str, callback: Callback) -> Outcome:
        now = format_time(self._clock.now())
        async with self._store.transaction() as tx:
            if not await tx.remember_callback(carrier, callback.idempotency_key, now):
                return Outcome.DUPLICATE
            if isinstance(callback.event, InboundSms):
                outcome = await self._inbound(tx, carrier, callback.event, now)
            else:
                outcome = await self._report(tx, carrier, callback.event, now)
        self._on_commit()
        return outcome

    async def _inbound(self, tx: Tx, carrier: str, sms: InboundSms, now: str) -> Outcome:
        number = await tx.get_number(sms.destination)
        if number is None:
            await tx.add_unrouted(
                carrier, sms.source, sms.destination, sms.text, sms.carrier_message_id, now
            )
            return Outcome.UNROUTED
        target = Target(
            destination=Address("tel", sms.destination),
            status=TargetStatus.RECEIVED,
            parts=sms.parts or segments.count_parts(sms.text),
            tm_update=now,
            carrier=carrier,
            carrier_status="received",
        )
        message = Message(
            id=str(uuid.uuid4()),
            customer_id=number.customer_id,
            type="sms",
            source=Address("tel", sms.source),
            targets=(target,),
            text=sms.text,
            direction=Direction.INBOUND,
            tm_create=now,
        )
        await tx.insert_message(message, next_send_at=None, send_deadline_at=None)
        await tx.add_carrier_ref(carrier, sms.carrier_message_id, TargetRef(message.id, 0))
        if await should_notify(tx, message, EventType.MESSAGE_CREATED):
            await tx.add_event(new_event_id(), EventType.MESSAGE_CREATED, message, now)
        return Outcome.APPLIED

    async def _report(self, tx: Tx, carrier: str, report: DeliveryReport, now: str) -> Outcome:
        ref = await tx.find_target(carrier, report.carrier_message_id)
        change = Change(report.status, report.carrier_status, report.error_code, report.parts)
        if ref is None:
            # Carriers can report before the send's answer is recorded; keep it for then.
            pending = PendingReport(
                change.status.value, change.carrier_status, change.error_code, change.parts or 0
            )
            await tx.add_pending_report(carrier, report.carrier_message_id, pending, now)
            return Outcome.EARLY
        applied = await _apply(tx, ref, change, now, dispatch_done=False)
        return Outcome.APPLIED if applied else Outcome.STALE

    # Dispatch results ---------------------------------------------------------------------

    async def record_sent(self, job: DispatchJob, result: SendResult) -> None:
        ref = TargetRef(job.message_id, job.idx)
        now = format_time(self._clock.now())
        sent = Change(TargetStatus.SENT, result.carrier_status, parts=result.parts)
        async with self._store.transaction() as tx:
            await tx.add_carrier_ref(job.carrier, result.carrier_message_id, ref)
            await _apply(tx, ref, sent, now, dispatch_done=True)
            for early in await tx.take_pending_reports(job.carrier, result.carrier_message_id):
                change = Change(
                    TargetStatus(early.status),
                    early.carrier_status,
                    early.error_code,
                    early.parts or None,
                )
                await _apply(tx, ref, change, now, dispatch_done=True)
        self._on_commit()

    async def record_final(self, job: DispatchJob, change: Change) -> None:
        """The send ended without a carrier accepting it: failed, or gw_timeout."""
        now = format_time(self._clock.now())
        async with self._store.transaction() as tx:
            await _apply(tx, TargetRef(job.message_id, job.idx), change, now, dispatch_done=True)
        self._on_commit()

    async def retry_later(self, job: DispatchJob, next_send_at: str) -> None:
        async with self._store.transaction() as tx:
            await tx.schedule_send(
                TargetRef(job.message_id, job.idx), next_send_at, job.send_attempts + 1
            )


async def _apply(tx: Tx, ref: TargetRef, change: Change, now: str, *, dispatch_done: bool) -> bool:
    """Move a target forward (never back) and queue message_updated; False if nothing moved."""
    target = await tx.get_target(ref)
    if target is None:
        return False
    status = advance_status(target.status, change.status)
    if status is None:
        if dispatch_done:
            await tx.clear_dispatch(ref)
        return False
    updated = msgspec.structs.replace(
        target,
        status=status,
        tm_update=now,
        carrier_status=change.carrier_status or target.carrier_status,
        error_code=change.error_code or target.error_code,
        parts=change.parts or target.parts,
    )
    await tx.update_target(ref, updated, dispatch_done=dispatch_done)
    message = await tx.get_message(ref.message_id)
    if message is not None and await should_notify(tx, message, EventType.MESSAGE_UPDATED):
        await tx.add_event(new_event_id(), EventType.MESSAGE_UPDATED, message, now)
    return True
