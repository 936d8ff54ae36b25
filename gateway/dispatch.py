"""Outbound dispatch: submits queued targets to the carrier of their source number."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping

from gateway.carriers.base import Carrier, Submission
from gateway.changes import Change
from gateway.clock import Clock, format_time, later, parse_time
from gateway.config import DispatchConfig
from gateway.errors import CarrierPermanentError, CarrierTransientError
from gateway.models import TargetStatus
from gateway.store import DispatchJob, Store
from gateway.tracking import Tracker

# A claimed target is invisible to other workers for this long past its attempt timeout, so a
# worker that dies mid-send has its targets picked up again.
LEASE_MARGIN_S = 30.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        tracker: Tracker,
        carriers: Mapping[str, Carrier],
        clock: Clock,
        config: DispatchConfig,
        public_url: str,
    ) -> None:
        self._store = store
        self._tracker = tracker
        self._carriers = carriers
        self._clock = clock
        self._config = config
        self._public_url = public_url.rstrip("/")

    async def run_once(self) -> int:
        """Submit what is due, then run the report and reassembly timers; how much was done."""
        submitted = await self.submit_due()
        expired = await self._tracker.expire_reports()
        flushed = await self._tracker.flush_inbound()
        return submitted + expired + flushed

    async def submit_due(self) -> int:
        """Submit every target that is due now; returns how many were handled."""
        now = self._clock.now()
        lease_until = later(now, self._config.attempt_timeout_s + LEASE_MARGIN_S)
        jobs = await self._store.claim_due_targets(
            format_time(now), lease_until, self._config.concurrency
        )
        await asyncio.gather(*(self._submit(job) for job in jobs))
        return len(jobs)

    async def _submit(self, job: DispatchJob) -> None:
        remaining_s = _seconds_left(job, self._clock.now())
        carrier = self._carriers.get(job.carrier)
        if remaining_s <= 0:
            await self._tracker.record_final(job, Change(TargetStatus.GW_TIMEOUT))
            return
        if carrier is None:
            change = Change(TargetStatus.FAILED, error_code="carrier_not_configured")
            await self._tracker.record_final(job, change)
            return
        submission = Submission(
            source=job.source,
            destination=job.destination,
            text=job.text,
            status_callback_url=f"{self._public_url}/hooks/{carrier.name}",
            reference=f"{job.message_id}:{job.idx}",
        )
        timeout_s = min(self._config.attempt_timeout_s, remaining_s)
        try:
            result = await carrier.send(submission, timeout_s)
        except CarrierPermanentError as exc:
            change = Change(TargetStatus.FAILED, "rejected", exc.error_code)
            await self._tracker.record_final(job, change)
        except CarrierTransientError:
            await self._tracker.retry_later(job, self._next_try(job))
        else:
            await self._tracker.record_sent(job, result)

    def _next_try(self, job: DispatchJob) -> str:
        """Back off, but never past the deadline: the try at the deadline records gw_timeout."""
        delays = self._config.retry_delays_s
        delay_s = delays[min(job.send_attempts, len(delays) - 1)]
        deadline = parse_time(job.send_deadline_at)
        return format_time(min(self._clock.now() + dt.timedelta(seconds=delay_s), deadline))


def _seconds_left(job: DispatchJob, now: dt.datetime) -> float:
    return (parse_time(job.send_deadline_at) - now).total_seconds()
