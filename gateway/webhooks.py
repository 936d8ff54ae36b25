"""Customer webhook delivery: claim due outbox events, attempt them, record, schedule retries.

Isolation: deliveries run as separate tasks under a global cap and a cap per endpoint, so a slow
or dead endpoint holds only its own slots and never delays other customers' deliveries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time

from gateway.breaker import Breakers
from gateway.clock import Clock, format_time, later, parse_time
from gateway.config import WebhooksConfig
from gateway.delivery_policy import Answer, ErrorClass, disable_reason, next_delay_s
from gateway.errors import StoreError
from gateway.group_commit import GroupCommitter
from gateway.models import Customer
from gateway.store import Attempt, AttemptOutcome, EndpointHealth, OutboxEvent, Store
from gateway.webhook_attempt import Attempter, redacted
from gateway.workers import Wakeup

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 30.0
# Logged when an endpoint's circuit breaker opens (bench/isolation.py counts these).
BREAKER_PAUSED = "webhook endpoint of customer %s failed %d attempts in a row: paused for %g s"


class WebhookDeliverer:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: WebhooksConfig,
        attempter: Attempter,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._attempter = attempter
        self._rng = rng or random.Random()
        self._in_flight: dict[str, int] = {}  # customer id -> deliveries running
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup: Wakeup | None = None
        # Attempts that finish together are recorded in one transaction (one disk sync).
        self._results = GroupCommitter(store.finish_attempts)
        self._breakers = Breakers(config.breaker_failures, config.breaker_cooldown_s)

    async def run_once(self) -> int:
        """Start what is due and wait for those deliveries (tests step the worker this way)."""
        tasks = await self._start_due()
        await asyncio.gather(*tasks)
        return len(tasks)

    async def serve(self, wakeup: Wakeup, poll_interval_s: float) -> None:
        """Keep the pipeline full until cancelled; a finished delivery makes room at once."""
        self._wakeup = wakeup
        try:
            while True:
                try:
                    started = await self._start_due()
                except StoreError as exc:
                    log.warning("webhooks: database unavailable, retrying: %s", exc)
                    started = []
                except Exception:
                    # A bug in one step must not stop deliveries for good.
                    log.exception("webhooks: claiming failed, retrying")
                    started = []
                if not started:
                    await wakeup.wait(poll_interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop deliveries in flight; their leases are released at the next start."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _start_due(self) -> list[asyncio.Task[None]]:
        in_flight = sum(self._in_flight.values())
        free = self._config.concurrency - in_flight
        # Claim in batches, not one freed slot at a time: a claim is a transaction of its own.
        if free <= 0 or (in_flight and free < self._config.concurrency // 4):
            return []
        per_endpoint = self._config.per_endpoint_concurrency
        now = self._clock.now()
        # What each endpoint may still start: its breaker's allowance less its attempts in flight.
        room = self._breakers.limited(per_endpoint, now)
        for customer_id, in_flight_now in self._in_flight.items():
            room[customer_id] = room.get(customer_id, per_endpoint) - in_flight_now
        lease_until = later(now, self._config.timeout_s + LEASE_MARGIN_S)
        claimed = await self._store.claim_due_events(
            format_time(now), lease_until, free, per_endpoint, room
        )
        fitting, surplus = self._fit(claimed.events, now)
        if surplus:
            await self._store.release_events([event.seq for event in surplus])
        customers = claimed.customers  # the endpoint, method and secrets as they are now
        return [self._start(event, customers.get(event.customer_id)) for event in fitting]

    def _room(self, customer_id: str, now: dt.datetime) -> int:
        return self._breakers.room(customer_id, self._config.per_endpoint_concurrency, now)

    def _fit(
        self, events: list[OutboxEvent], now: dt.datetime
    ) -> tuple[list[OutboxEvent], list[OutboxEvent]]:
        """Split claimed events into those within each endpoint's cap and the rest."""
        used_by = dict(self._in_flight)
        fitting, surplus = [], []
        for event in events:
            used = used_by.get(event.customer_id, 0)
            if used < self._room(event.customer_id, now):
                used_by[event.customer_id] = used + 1
                fitting.append(event)
            else:
                surplus.append(event)
        return fitting, surplus

    def _start(self, event: OutboxEvent, customer: Customer | None) -> asyncio.Task[None]:
        customer_id = event.customer_id
        self._in_flight[customer_id] = self._in_flight.get(customer_id, 0) + 1
        task = asyncio.create_task(self._deliver(event, customer))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(customer_id, done))
        return task

    def _finished(self, customer_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight[customer_id] -= 1
        if not self._in_flight[customer_id]:
            del self._in_flight[customer_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery failed", exc_info=task.exception())
        if self._wakeup is not None:
            self._wakeup.notify()

    async def _deliver(self, event: OutboxEvent, customer: Customer | None) -> None:
        started = self._clock.now()
        started_s = time.perf_counter()
        answer = await self._answer(customer, event, int(started.timestamp()))
        attempt = Attempt(
            outbox_seq=event.seq,
            attempt_number=event.attempts + 1,
            trigger=event.trigger,
            tm_attempt=format_time(started),
            url=redacted(customer.webhook_uri if customer else ""),
            status_code=answer.status_code,
            duration_ms=round((time.perf_counter() - started_s) * 1000, 3),
            error=answer.error,
            response_excerpt=answer.response_excerpt,
            error_class=answer.error_class.value,
        )
        if answer.tells_of_endpoint and self._breakers.record(
            event.customer_id, answer.succeeded, self._clock.now()
        ):
            failures, cooldown_s = self._config.breaker_failures, self._config.breaker_cooldown_s
            log.warning(BREAKER_PAUSED, event.customer_id, failures, cooldown_s)
        state, next_attempt_at = self._next_state(event, answer)
        health = self._health(customer, answer, attempt.tm_attempt)
        outcome = AttemptOutcome(attempt, event.requeues, state, next_attempt_at, health)
        await self._results.submit(outcome)

    async def _answer(self, customer: Customer | None, event: OutboxEvent, now_s: int) -> Answer:
        if customer is None or not customer.webhook_uri:
            return Answer(error_class=ErrorClass.NO_ENDPOINT, error="no webhook_uri is set")
        try:
            return await self._attempter.attempt(customer, event.event_id, event.body, now_s)
        except Exception as exc:
            # Still an attempt: logged and retried on the schedule, never silently re-leased.
            log.exception("webhook %s: unexpected error", event.event_id)
            return Answer(error_class=ErrorClass.INTERNAL, error=f"internal: {type(exc).__name__}")

    def _next_state(self, event: OutboxEvent, answer: Answer) -> tuple[str, str | None]:
        if answer.succeeded:
            return "delivered", None
        now = self._clock.now()
        if answer.error_class is ErrorClass.GONE:
            # The endpoint is being disabled: the event waits, unspent, for it to be re-enabled.
            return "pending", format_time(now)
        schedule = self._config.retry_schedule_s
        if event.attempts >= len(schedule):
            log.warning("webhook %s exhausted its retries: %s", event.event_id, answer.error)
            return "failed", None
        delay_s = next_delay_s(
            schedule[event.attempts], answer, now, self._config.jitter, self._rng
        )
        return "pending", later(now, delay_s)

    def _health(self, customer: Customer | None, answer: Answer, at: str) -> EndpointHealth | None:
        if customer is None:
            return None
        if answer.succeeded:
            return EndpointHealth(customer.id, True, at)
        since = customer.webhook_failing_since
        failing_since = parse_time(since) if since else None
        reason = disable_reason(
            answer, failing_since, self._clock.now(), self._config.disable_after_s
        )
        if reason:
            log.warning("webhook endpoint of customer %s disabled: %s", customer.id, reason)
        gone = answer.error_class is ErrorClass.GONE
        window_start = "" if gone else later(self._clock.now(), -self._config.disable_after_s)
        return EndpointHealth(customer.id, False, at, reason or "", window_start)
