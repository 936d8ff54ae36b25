"""Webhook isolation: healthy endpoints' delivery rate without and with a dead endpoint, one run.

Starts a receiver (uvicorn, another process; 200 to everything, as in bench/delivery.py) and a
black hole (uvicorn, another process; reads each request and never answers). Then, per phase, a
fresh SQLite outbox is filled and drained by the gateway's delivery workers running in this
process (as bench/delivery.py runs them), with the webhook settings' defaults (128 in flight, 4 per
endpoint) except `timeout_s`:
1. HEALTHY customers, each with its own endpoint on the receiver, EVENTS events queued round robin;
2. the same, plus one customer whose endpoint never answers: each attempt runs into `timeout_s`;
3. the same, plus one customer whose endpoint refuses connections (nothing listens on its port).
A dead customer's backlog (DEAD_BACKLOG events) is queued before the healthy events, as if the
endpoint had been down for a while. Prints the healthy events/s of each phase (all EVENTS, from
the workers' start to the last healthy attempt) and its ratio to phase 1 of the same round, as
the median over the rounds (ROUNDS, the phases in turn) with each round's ratio.
Run: `make bench` (or `.venv/bin/python bench/isolation.py [--rounds N]`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from gateway import events
from gateway.clock import SystemClock, format_time, parse_time
from gateway.config import Config, WebhooksConfig, config_from_mapping
from gateway.models import Customer, EventType
from gateway.runtime import Gateway
from gateway.signing import generate_webhook_secret
from gateway.webhooks import BREAKER_PAUSED

if __package__ in (None, ""):  # run as a script: the repository root makes `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, query, server
from bench.delivery import sample

EVENTS = 12_000  # healthy events per phase: 6-8 s of delivery here
DEAD_BACKLOG = 2_000
ROUNDS = 7  # the phases alternate; five rounds' medians have still differed by a sixth here
TIMEOUT_S = 5.0  # Outpost's default; Convoy's is 10 s, Svix's 30 s (spec/customer-webhooks.md)
DRAIN_LIMIT_S = 300.0
DEFAULTS = WebhooksConfig()
# Enough healthy endpoints to fill every slot at their own cap, so the dead one competes for the
# shared pool (16 when it held 64).
HEALTHY = DEFAULTS.concurrency // DEFAULTS.per_endpoint_concurrency

ONLY = f"{HEALTHY} healthy endpoints only"
SILENT = "+ 1 that never answers"
REFUSING = "+ 1 that refuses connections"


async def black_hole(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A customer endpoint that hung: it reads the request, then never answers."""
    if scope["type"] != "http":
        return
    while (await receive())["type"] != "http.disconnect":
        pass


@dataclass(frozen=True)
class PhaseResult:
    healthy_rate: float  # events/s
    dead_attempts: str  # what the dead endpoint's logged attempts ended in


def phase_config(database: Path) -> Config:
    return config_from_mapping(
        {"database": {"path": str(database)},
         "webhooks": {"allowed_networks": ["127.0.0.0/8"], "timeout_s": TIMEOUT_S}},
        {},
    )  # fmt: skip


def new_customer(name: str, url: str, now: str) -> Customer:
    return Customer(str(uuid.uuid4()), name, url, "POST", generate_webhook_secret(), now)


async def queue_events(gateway: Gateway, owners: list[Customer], count: int, now: str) -> None:
    """`count` message_created events, owned round robin by `owners`, in one transaction."""
    async with gateway.store.transaction() as tx:
        for i in range(count):
            message = sample(owners[i % len(owners)].id, now)
            body = events.event_body(EventType.MESSAGE_CREATED, message)
            await tx.add_event(events.new_event_id(), EventType.MESSAGE_CREATED, message, body, now)


async def drained(database: Path, dead_id: str) -> str:
    """Once no healthy event is pending: the time of the last healthy attempt."""
    pending = "SELECT count(*) FROM outbox WHERE state = 'pending' AND customer_id != ?"
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while (await asyncio.to_thread(query, database, pending, (dead_id,)))[0][0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"healthy events still pending after {DRAIN_LIMIT_S:g} s")
        await asyncio.sleep(0.1)  # the workers run in this loop; poll lightly
    last = "SELECT max(tm_update) FROM outbox WHERE customer_id != ?"
    return str((await asyncio.to_thread(query, database, last, (dead_id,)))[0][0])


def attempts_summary(database: Path, dead_id: str) -> str:
    rows = query(
        database,
        "SELECT a.error_class, count(*) FROM webhook_attempts a JOIN outbox o "
        "ON o.seq = a.outbox_seq WHERE o.customer_id = ? GROUP BY a.error_class",
        (dead_id,),
    )
    return ", ".join(f"{count} {error_class or 'ok'}" for error_class, count in rows) or "none"


async def run_phase(
    database: Path, receiver_url: str, dead_url: str | None, dead_backlog: int
) -> PhaseResult:
    gateway = await Gateway.open(phase_config(database))
    try:
        now = format_time(SystemClock().now())
        healthy = [new_customer(f"healthy-{i}", f"{receiver_url}/{i}", now) for i in range(HEALTHY)]
        dead = new_customer("dead", dead_url or "", now)
        for customer in [*healthy, dead] if dead_url else healthy:
            await gateway.store.create_customer(customer)
        if dead_url:
            await queue_events(gateway, [dead], dead_backlog, now)
        await queue_events(gateway, healthy, EVENTS, now)
        started = SystemClock().now()
        await gateway.start_workers()  # as `gateway serve` runs them
        last = await drained(database, dead.id)
        seconds = (parse_time(last) - started).total_seconds()
        summary = attempts_summary(database, dead.id) if dead_url else "-"
    finally:
        await gateway.close()
    return PhaseResult(EVENTS / seconds, summary)


async def measure(
    folder: Path, receiver_url: str, dead_urls: dict[str, str | None], args: argparse.Namespace
) -> dict[str, list[PhaseResult]]:
    results: dict[str, list[PhaseResult]] = {name: [] for name in dead_urls}
    for round_number in range(args.rounds):
        for n, (name, dead_url) in enumerate(dead_urls.items()):
            database = folder / f"round{round_number}-phase{n}.db"
            result = await run_phase(database, receiver_url, dead_url, args.dead_backlog)
            results[name].append(result)
    return results


def print_table(results: dict[str, list[PhaseResult]], args: argparse.Namespace) -> None:
    # Each ratio is a phase over the healthy-only phase of its own round (seconds apart): this
    # machine's speed drifts by a fifth over a minute: the ratio of the phases' medians over
    # five rounds read 0.85 and 0.84 in two runs, and 0.99 over nine rounds in the next.
    alone = [r.healthy_rate for r in results[ONLY]]
    head = f"{'isolation: healthy deliveries':<34}{'events/s':>9}{'range':>12}{'ratio':>7}"
    print(f"{head}   dead endpoint's attempts   ratio per round")
    for name, runs in results.items():
        rates = [r.healthy_rate for r in runs]
        ratios = [rate / base for rate, base in zip(rates, alone, strict=True)]
        spread = f"{min(rates):.0f}-{max(rates):.0f}"
        each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(
            f"{name:<34}{statistics.median(rates):>9.0f}{spread:>12}"
            f"{statistics.median(ratios):>7.2f}   {runs[-1].dead_attempts:<27}{each}"
        )
    print(f"{'ratio target (dead costs <= 10 %)':<34}{'':>21}{'>= 0.90':>7}")
    rounds = (
        f"median and range of {args.rounds} rounds, the ratio the median of each round's; "
        if args.rounds > 1
        else ""
    )
    print(
        f"{HEALTHY} healthy customers, {EVENTS} events round robin; a dead customer has "
        f"{args.dead_backlog} events queued ahead of them. timeout_s {TIMEOUT_S:g}, "
        f"{DEFAULTS.concurrency} in flight, {DEFAULTS.per_endpoint_concurrency} per endpoint; "
        f"{rounds}attempts: the last round's, logged before the healthy events were all delivered."
    )
    print(
        "dead: `never answers` accepts, reads the request and stays silent, so each attempt ends "
        "at timeout_s; `refuses` has nothing listening on its port, so each attempt fails at "
        "once (retried 5 s later). Default circuit breaker: 10 failures in a row pause an "
        "endpoint for 30 s."
    )


class BreakerPauses(logging.Handler):
    """Counts the deliverer's circuit-breaker warnings, which would otherwise come between the
    lines of the table (the dead endpoint is paused several times a phase, by design); any
    other warning is printed as usual."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == BREAKER_PAUSED:
            self.count += 1
        else:
            print(self.format(record), file=sys.stderr)

    @classmethod
    def install(cls) -> BreakerPauses:
        handler = cls()
        webhooks_log = logging.getLogger("gateway.webhooks")
        webhooks_log.addHandler(handler)
        webhooks_log.propagate = False
        return handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Webhook isolation benchmark.")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="run the phases this often")
    parser.add_argument("--dead-backlog", type=int, default=DEAD_BACKLOG, metavar="N")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    receiver_port, hole_port, refused_port = free_port(), free_port(), free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    started = time.monotonic()
    pauses = BreakerPauses.install()
    with tempfile.TemporaryDirectory(prefix="bench-isolation-") as name:
        folder = Path(name)
        receiver = [*uvicorn, "bench.receiver:app", "--port", str(receiver_port)]
        hole = [*uvicorn, "bench.isolation:black_hole", "--port", str(hole_port)]
        with server(receiver, receiver_port, folder / "receiver.log"), \
                server(hole, hole_port, folder / "hole.log"):  # fmt: skip
            dead_urls = {
                ONLY: None,
                SILENT: f"http://127.0.0.1:{hole_port}/hook",
                REFUSING: f"http://127.0.0.1:{refused_port}/hook",
            }
            receiver_url = f"http://127.0.0.1:{receiver_port}/hook"
            results = uvloop.run(measure(folder, receiver_url, dead_urls, args))
    print_table(results, args)
    print(f"circuit-breaker pauses of the dead endpoint, all rounds together: {pauses.count}")
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
