"""Target tracking, no HTTP: carrier callbacks, dispatch results and report deadlines become
message changes. Every change commits together with its outbox event, so an acknowledged
callback is never lost."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from gateway import inbound
from gateway.carriers.base import Callback, DeliveryReport, InboundSms, SendResult
from gateway.changes import Change, Outcome, aggregate_parts, apply_change
from gateway.clock import Clock, format_time, later
from gateway.config import Config
from gateway.group_commit import GroupTransactor
from gateway.models import TargetStatus, advance_status
from gateway.store import DispatchJob, PendingReport, Store, TargetRef, Tx

# Per step, how many overdue reports or inbound SMS the timers handle.
TIMER_BATCH = 100


class Tracker:
    def __init__(
        self, store: Store, clock: Clock, config: Config, on_commit: Callable[[], None]
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._on_commit = on_commit
        # Callbacks and dispatch results arriving together share one transaction and disk sync.
        self._writes = GroupTransactor(store)

    def _now(self) -> str:
        return format_time(self._clock.now())

    def _dlr_deadline(self) -> str:
        return later(self._clock.now(), self._config.dispatch.dlr_deadline_s)

    async def accept_callback(self, carrier: str, callback: Callback) -> Outcome:
        """Apply one callback now; returns once it is committed. (Carriers' callbacks go through
        the inbox and the normaliser instead, which call `apply_callback`.)"""
        now = self._now()

        async def work(tx: Tx) -> Outcome:
            return await self.apply_callback(tx, carrier, callback, now, now)

        outcome = await self._writes.run(work)
        if outcome is not Outcome.DUPLICATE:
            self._on_commit()
        return outcome

    async def apply_callback(
        self, tx: Tx, carrier: str, callback: Callback, received_at: str, applied_at: str
    ) -> Outcome:
        """One callback's changes, in the open transaction. Its times are when it was received;
        a part of a concatenated SMS waits for the rest from when it is applied, so a
        normaliser that fell behind does not send parts out alone."""
        now = received_at
        event = callback.event
        remember = partial(tx.remember_callback, carrier, callback.idempotency_key, now)
        if isinstance(event, InboundSms):  # it decides where the id is needed
            return await inbound.receive(tx, carrier, event, now, remember, applied_at)
        if not await remember():
            return Outcome.DUPLICATE
        if isinstance(event, DeliveryReport):
            return await self._report(tx, carrier, event, now)
        return Outcome.IGNORED

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
        effective = await self._per_part(tx, carrier, report, change)
        if effective is None:
            return Outcome.STALE
        applied = await apply_change(
            tx, ref, effective, now, dispatch_done=False, dlr_deadline_at=self._dlr_deadline()
        )
        return Outcome.APPLIED if applied else Outcome.STALE

    async def _per_part(
        self, tx: Tx, carrier: str, report: DeliveryReport, change: Change
    ) -> Change | None:
        """For a target reported part by part, the change its parts add up to (or None)."""
        part = await tx.part_status(carrier, report.carrier_message_id)
        if part is None:
            return change  # a single-part report
        moved = advance_status(TargetStatus(part), report.status)  # parts move forward too
        if moved is None:
            return None
        statuses = await tx.set_part_status(carrier, report.carrier_message_id, moved)
        status = aggregate_parts(statuses or [])
        if status is None:
            return None
        # The target's part count comes from the send; a part's own count is 1.
        return Change(status, change.carrier_status, change.error_code)

    # Dispatch results ---------------------------------------------------------------------

    async def record_sent(self, job: DispatchJob, result: SendResult) -> None:
        ref = TargetRef(job.message_id, job.idx)
        now = self._now()
        parts = len(result.part_ids) or result.parts
        sent = Change(TargetStatus.SENT, result.carrier_status, parts=parts)
        ids = result.part_ids or (result.carrier_message_id,)

        async def work(tx: Tx) -> None:
            for carrier_message_id in ids:
                await tx.add_carrier_ref(job.carrier, carrier_message_id, ref)
            if result.part_ids:
                await tx.add_target_parts(job.carrier, result.part_ids, ref)
            await apply_change(
                tx, ref, sent, now, dispatch_done=True, dlr_deadline_at=self._dlr_deadline()
            )
            for carrier_message_id in ids:
                await self._apply_early_reports(tx, job.carrier, carrier_message_id, now)

        await self._writes.run(work)
        self._on_commit()

    async def _apply_early_reports(
        self, tx: Tx, carrier: str, carrier_message_id: str, now: str
    ) -> None:
        for early in await tx.take_pending_reports(carrier, carrier_message_id):
            report = DeliveryReport(
                carrier_message_id, TargetStatus(early.status), early.carrier_status,
                early.error_code, early.parts or None,
            )  # fmt: skip
            await self._report(tx, carrier, report, now)

    async def record_final(self, job: DispatchJob, change: Change) -> None:
        """The send ended without a carrier accepting it: failed, or gw_timeout."""
        now = self._now()
        ref = TargetRef(job.message_id, job.idx)

        async def work(tx: Tx) -> None:
            await apply_change(tx, ref, change, now, dispatch_done=True)

        await self._writes.run(work)
        self._on_commit()

    async def retry_later(self, job: DispatchJob, next_send_at: str) -> None:
        ref = TargetRef(job.message_id, job.idx)

        async def work(tx: Tx) -> None:
            await tx.schedule_send(ref, next_send_at, job.send_attempts + 1)

        await self._writes.run(work)

    # Timers ---------------------------------------------------------------------------------

    async def expire_reports(self) -> int:
        """Targets `sent` with no final report by their deadline become dlr_timeout."""
        now = self._now()
        overdue = await self._store.overdue_reports(now, TIMER_BATCH)
        if not overdue:
            return 0

        async def expire(tx: Tx) -> None:
            for ref in overdue:
                change = Change(TargetStatus.DLR_TIMEOUT)
                if not await apply_change(tx, ref, change, now, dispatch_done=False):
                    await tx.clear_dlr_deadline(ref)  # already final: nothing is overdue

        await self._store.atomic(expire)
        self._on_commit()
        return len(overdue)

    async def flush_inbound(self) -> int:
        """Concatenated inbound SMS still missing parts after the wait go out as they are."""
        now = self._clock.now()
        waited = later(now, -self._config.inbound.reassembly_wait_s)
        overdue = await self._store.overdue_inbound(waited, TIMER_BATCH)
        if not overdue:
            return 0

        async def flush(tx: Tx) -> None:
            for key in overdue:
                parts = await tx.take_inbound_parts(key)
                if parts:
                    await inbound.receive(tx, key.carrier, inbound.joined(parts), format_time(now))

        await self._store.atomic(flush)
        self._on_commit()
        return len(overdue)
