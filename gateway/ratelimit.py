"""Per-customer request rate limits: a token bucket per key, pure apart from the injected clock."""

from __future__ import annotations

from gateway.clock import Clock

# Beyond this many tracked keys, buckets that have refilled completely are forgotten.
MAX_TRACKED_KEYS = 10_000


class TokenBuckets:
    """`rate_per_s` tokens a second, at most `burst` saved up; a rate of 0 turns limiting off."""

    def __init__(self, rate_per_s: float, burst: float, clock: Clock) -> None:
        self._rate_per_s = rate_per_s
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at_s)

    def take(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until it could."""
        if self._rate_per_s <= 0:
            return 0.0
        now_s = self._clock.now().timestamp()
        tokens, at_s = self._buckets.get(key, (self._burst, now_s))
        tokens = min(self._burst, tokens + (now_s - at_s) * self._rate_per_s)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now_s)
            return (1.0 - tokens) / self._rate_per_s
        self._buckets[key] = (tokens - 1.0, now_s)
        if len(self._buckets) > MAX_TRACKED_KEYS:
            self._forget_full(now_s)
        return 0.0

    def _forget_full(self, now_s: float) -> None:
        full = [
            key
            for key, (tokens, at_s) in self._buckets.items()
            if tokens + (now_s - at_s) * self._rate_per_s >= self._burst
        ]
        for key in full:
            del self._buckets[key]
