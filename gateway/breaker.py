"""Per-endpoint circuit breaker, pure: an endpoint that failed its last few attempts in a row is
left alone for a while. Its events wait, spending none of their retries, instead of taking the
worker's time from healthy endpoints (customer-webhooks.md §5, Convoy's breaker, reduced to
consecutive failures). After the pause one attempt at a time probes it: a success closes the
breaker, a failure opens it again. The state lives in memory; a restart forgets it, which costs
at most one more run of failures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class _Endpoint:
    failures: int = 0  # consecutive failed attempts
    open_until: dt.datetime | None = None


class Breakers:
    def __init__(self, failures_to_open: int, cooldown_s: float) -> None:
        self._failures_to_open = failures_to_open  # 0: never open
        self._cooldown = dt.timedelta(seconds=cooldown_s)
        self._endpoints: dict[str, _Endpoint] = {}  # only endpoints whose last attempt failed

    def record(self, endpoint: str, succeeded: bool, now: dt.datetime) -> bool:
        """Count one attempt's result; True when this failure opened the breaker."""
        if succeeded:
            self._endpoints.pop(endpoint, None)
            return False
        state = self._endpoints.setdefault(endpoint, _Endpoint())
        state.failures += 1
        if not self._failures_to_open or state.failures < self._failures_to_open:
            return False
        if state.open_until is not None and now < state.open_until:
            return False  # an attempt that was in flight when it opened: already paused
        state.open_until = now + self._cooldown
        return True

    def limited(self, per_endpoint: int, now: dt.datetime) -> dict[str, int]:
        """The endpoints allowed fewer than `per_endpoint` attempts in flight now, with their
        allowance: 0 while open, 1 while probing."""
        return {
            endpoint: self.room(endpoint, per_endpoint, now)
            for endpoint, state in self._endpoints.items()
            if state.open_until is not None
        }

    def room(self, endpoint: str, per_endpoint: int, now: dt.datetime) -> int:
        """Attempts the endpoint may have in flight: none while open, one while probing."""
        state = self._endpoints.get(endpoint)
        if state is None or state.open_until is None:
            return per_endpoint
        return 0 if now < state.open_until else 1
