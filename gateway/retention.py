"""Retention: what is finished and old enough is deleted, so the database stops growing with
traffic. Messages stay (customers list them); finished webhook deliveries with their attempt log
and carriers' callback ids (kept for recognising retries, which carriers stop within days) go."""

from __future__ import annotations

from gateway.clock import Clock, later
from gateway.store import Store

# Rows per transaction: small enough that callbacks never wait long behind a prune.
PRUNE_BATCH = 1000
# How often to look when nothing was old enough last time.
PRUNE_INTERVAL_S = 600.0

SECONDS_PER_DAY = 86400


class Retention:
    def __init__(self, store: Store, clock: Clock, retention_days: float) -> None:
        self._store = store
        self._clock = clock
        self._retention_s = retention_days * SECONDS_PER_DAY

    async def run_once(self) -> int:
        """Delete one batch of what is past retention; how many rows went."""
        if not self._retention_s:
            return 0
        return await self._store.prune(later(self._clock.now(), -self._retention_s), PRUNE_BATCH)
