"""Customer webhook delivery: claim outbox events, sign, send to the pinned address, retry."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

import httpx
import msgspec

from gateway import netguard, signing
from gateway.clock import Clock, format_time, later
from gateway.config import WebhooksConfig
from gateway.errors import WebhookAddressBlocked
from gateway.models import Customer
from gateway.store import Attempt, OutboxEvent, Store

log = logging.getLogger(__name__)

RESPONSE_EXCERPT_BYTES = 2048
LEASE_MARGIN_S = 30.0
USER_AGENT = "sms-webhook-gateway/0.1"


class AttemptResult(msgspec.Struct, frozen=True):
    status_code: int = 0  # 0 when no HTTP answer came (blocked, refused, timed out)
    error: str = ""
    response_excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


def signed_headers(
    customer: Customer, event_id: str, timestamp_s: int, body: bytes
) -> dict[str, str]:
    """Both signature schemes: VoIPBIN's X-VoIPBIN-Signature and Standard Webhooks."""
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "x-voipbin-signature": signing.voipbin_signature(customer.webhook_secret, body),
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signing.sign_standard_webhook(
            customer.webhook_secret, event_id, timestamp_s, body
        ),
    }


class WebhookDeliverer:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: WebhooksConfig,
        http: httpx.AsyncClient,
        resolver: netguard.Resolver = netguard.system_resolver,
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._http = http
        self._resolver = resolver
        self._policy = netguard.NetworkPolicy(config.allowed_networks)

    async def run_once(self) -> int:
        """Attempt every event that is due now (each message's oldest first)."""
        now = self._clock.now()
        lease_until = later(now, self._config.timeout_s + LEASE_MARGIN_S)
        events = await self._store.claim_due_events(
            format_time(now), lease_until, self._config.concurrency
        )
        await asyncio.gather(*(self._deliver(event) for event in events))
        return len(events)

    async def _deliver(self, event: OutboxEvent) -> None:
        customer = await self._store.get_customer(event.customer_id)
        started = self._clock.now()
        started_s = time.perf_counter()
        if customer is None or not customer.webhook_uri:
            result = AttemptResult(error="the customer has no webhook_uri")
        else:
            result = await self._attempt(customer, event, int(started.timestamp()))
        attempt = Attempt(
            outbox_seq=event.seq,
            attempt_number=event.attempts + 1,
            trigger=event.trigger,
            tm_attempt=format_time(started),
            url=_redacted(customer.webhook_uri if customer else ""),
            status_code=result.status_code,
            duration_ms=round((time.perf_counter() - started_s) * 1000, 3),
            error=result.error,
            response_excerpt=result.response_excerpt,
        )
        state, next_attempt_at = self._next_state(event, result)
        await self._store.finish_attempt(attempt, state, next_attempt_at)

    def _next_state(self, event: OutboxEvent, result: AttemptResult) -> tuple[str, str | None]:
        if result.succeeded:
            return "delivered", None
        schedule = self._config.retry_schedule_s
        if event.attempts >= len(schedule):
            log.warning("webhook %s exhausted its retries: %s", event.event_id, result.error)
            return "failed", None
        return "pending", later(self._clock.now(), schedule[event.attempts])

    async def _attempt(self, customer: Customer, event: OutboxEvent, now_s: int) -> AttemptResult:
        try:
            pinned = await netguard.pin(customer.webhook_uri, self._policy, self._resolver)
        except WebhookAddressBlocked as exc:
            return AttemptResult(error=f"blocked: {exc}")
        headers = signed_headers(customer, event.event_id, now_s, event.body)
        headers["host"] = pinned.host_header
        extensions = {"sni_hostname": pinned.sni_hostname} if pinned.sni_hostname else {}
        request = self._http.build_request(
            customer.webhook_method,
            pinned.url,
            content=event.body,
            headers=headers,
            timeout=self._config.timeout_s,
            extensions=extensions,
        )
        try:
            # The whole exchange, not each phase, must fit in timeout_s: the lease depends on it.
            async with asyncio.timeout(self._config.timeout_s):
                return await self._exchange(request)
        except TimeoutError:
            return AttemptResult(error="timeout")

    async def _exchange(self, request: httpx.Request) -> AttemptResult:
        try:
            response = await self._http.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException:
            return AttemptResult(error="timeout")
        except httpx.HTTPError as exc:
            return AttemptResult(error=f"connection: {type(exc).__name__}")
        try:
            excerpt = await _read_excerpt(response)
        finally:
            await response.aclose()
        error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        return AttemptResult(response.status_code, error, excerpt)


async def _read_excerpt(response: httpx.Response) -> str:
    """At most RESPONSE_EXCERPT_BYTES of the answer: a customer cannot make us read more."""
    taken = bytearray()
    try:
        async for chunk in response.aiter_raw():
            taken += chunk
            if len(taken) >= RESPONSE_EXCERPT_BYTES:
                break
    except httpx.HTTPError:
        pass
    return bytes(taken[:RESPONSE_EXCERPT_BYTES]).decode("utf-8", "replace")


def _redacted(uri: str) -> str:
    """The URI without its query: customers sometimes put tokens there."""
    parts = urlsplit(uri)
    return parts._replace(query="", fragment="").geturl()
