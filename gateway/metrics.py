"""Prometheus metrics: one registry per gateway, so tests and several apps never collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.callbacks = Counter(
            "gateway_callbacks_total",
            "Carrier callbacks by carrier and outcome",
            ["carrier", "outcome"],
            registry=self.registry,
        )
        self.callback_seconds = Histogram(
            "gateway_callback_seconds",
            "Time to verify, commit and answer a carrier callback",
            ["carrier"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self._callback_counters: dict[tuple[str, str], Counter] = {}
        self._callback_timers: dict[str, Histogram] = {}
        self.messages_sent = Counter(
            "gateway_messages_created_total",
            "Messages accepted through the API",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "gateway_backlog",
            "Work waiting in the database, by kind",
            ["kind"],
            registry=self.registry,
        )

    def count_callback(self, carrier: str, outcome: str, count: int = 1) -> None:
        """Callbacks by outcome: forged at the door, or what applying them did."""
        # The labelled children are looked up once: `labels()` costs more than the count.
        key = (carrier, outcome)
        counter = self._callback_counters.get(key)
        if counter is None:
            counter = self._callback_counters[key] = self.callbacks.labels(carrier, outcome)
        counter.inc(count)

    def time_callback(self, carrier: str, seconds: float) -> None:
        """How long one callback took to verify, commit to the inbox and answer."""
        timer = self._callback_timers.get(carrier)
        if timer is None:
            timer = self._callback_timers[carrier] = self.callback_seconds.labels(carrier)
        timer.observe(seconds)

    def render(self, backlog: dict[str, int]) -> bytes:
        for kind, count in backlog.items():
            self.backlog.labels(kind).set(count)
        return generate_latest(self.registry)
