"""Webhook delivery throughput against its ceiling, measured side by side in one run.

Starts a receiver (uvicorn, another process) on 127.0.0.1, then posts the same bodies to it:
1. the ceiling: a plain aiohttp client, as many requests in flight as the gateway's default,
   twice over: with Python's own garbage-collector settings (a plain client), and with those
   `gateway serve` sets (gateway/gc_tuning.py), with which aiohttp itself posted 26-28 % more a
   second here: the stricter ceiling;
2. the gateway: events queued in a fresh SQLite outbox and drained by its running workers
   (signing, address guard, attempt log, one commit per attempt), with the collector settings
   of `gateway serve`.
The collector is put back as it was after each run that changes it. Each run is one to three
seconds, and this machine's speed drifts by a fifth or more within a minute, so the runs come in
rounds (five by default): plain, tuned, the gateway, tuned, plain; each round's ratios are the
gateway's rate over the mean of its two ceilings of each kind. Prints the medians and ranges of
the rates, the median ratios and each round's.
Run: `make bench` (or `.venv/bin/python bench/delivery.py [--rounds N]`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import aiohttp
import uvloop

from gateway import events
from gateway.clock import SystemClock, format_time
from gateway.config import WebhooksConfig, config_from_mapping
from gateway.gc_tuning import tune_for_serving
from gateway.models import Address, Customer, Direction, EventType, Message
from gateway.runtime import Gateway
from gateway.signing import generate_webhook_secret

if __package__ in (None, ""):  # run as a script: the repository root makes `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, server, spread

EVENTS = 10_000
ROUNDS = 5  # one round's ratio against the next has differed by a quarter here
IN_FLIGHT = WebhooksConfig().concurrency  # the default, for the plain client too


def sample(customer_id: str, now: str) -> Message:
    return Message(
        str(uuid.uuid4()), customer_id, "sms", Address("tel", "+15550000001"), (),
        "hello, this is test message.", Direction.INBOUND, now,
    )  # fmt: skip


async def ceiling(url: str, body: bytes) -> float:
    limit = asyncio.Semaphore(IN_FLIGHT)
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> None:
            async with limit, session.post(url, data=body) as response:
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(EVENTS)))
        return EVENTS / (time.perf_counter() - started)


@contextmanager
def serving_gc() -> Iterator[None]:
    """The collector as `gateway serve` sets it once started, then as it was: the ceiling runs
    after it must not inherit a raised threshold, nor a freeze of this run's leftovers. (The
    way back unfreezes everything, so nothing may be frozen before.)"""
    if gc.get_freeze_count():
        raise RuntimeError("objects were frozen before serving_gc(): it would thaw them")
    threshold = gc.get_threshold()
    tune_for_serving()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def gateway_rate(url: str, folder: Path) -> tuple[float, bytes]:
    config = config_from_mapping(
        {"database": {"path": str(folder / "bench.db")},
         "webhooks": {"allowed_networks": ["127.0.0.0/8"], "concurrency": IN_FLIGHT,
                      "per_endpoint_concurrency": IN_FLIGHT}},
        {},
    )  # fmt: skip
    gateway = await Gateway.open(config)
    now = format_time(SystemClock().now())
    customer = Customer(str(uuid.uuid4()), "bench", url, "POST", generate_webhook_secret(), now)
    await gateway.store.create_customer(customer)
    body = b""
    async with gateway.store.transaction() as tx:
        for _ in range(EVENTS):
            message = sample(customer.id, now)
            body = events.event_body(EventType.MESSAGE_CREATED, message)
            await tx.add_event(events.new_event_id(), EventType.MESSAGE_CREATED, message, body, now)
    with serving_gc():
        started = time.perf_counter()
        await gateway.start_workers()  # as `gateway serve` runs them
        while (await gateway.store.count_backlog())["webhook_events_pending"]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the workers run in this loop; a light query, 50 a second
        rate = EVENTS / (time.perf_counter() - started)
        await gateway.close()
    return rate, body


class Round(NamedTuple):
    plain: tuple[float, float]  # the ceiling with Python's collector settings, events/s
    tuned: tuple[float, float]  # with those of `gateway serve`
    gateway: float

    def ratio(self, ceilings: tuple[float, float]) -> float:
        return self.gateway / statistics.mean(ceilings)


async def tuned_ceiling(url: str, body: bytes) -> float:
    with serving_gc():
        return await ceiling(url, body)


async def measure(url: str, rounds: int) -> list[Round]:
    """After a warm-up, rounds of plain, tuned, the gateway, tuned, plain; each gateway run on a
    fresh database."""
    now = format_time(SystemClock().now())
    body = events.event_body(EventType.MESSAGE_CREATED, sample(str(uuid.uuid4()), now))
    await ceiling(url, body)  # a warm-up, left out: the first run has been the slowest here
    measured = []
    for _ in range(rounds):
        plain, tuned = await ceiling(url, body), await tuned_ceiling(url, body)
        with tempfile.TemporaryDirectory() as folder:
            gateway, _ = await gateway_rate(url, Path(folder))
        tuned_after = await tuned_ceiling(url, body)
        plain_after = await ceiling(url, body)
        measured.append(Round((plain, plain_after), (tuned, tuned_after), gateway))
    return measured


def print_table(measured: list[Round]) -> None:
    print(f"delivery (events/s), {len(measured)} round(s): medians, (min-max) over the rounds")
    plain = [rate for r in measured for rate in r.plain]
    tuned = [rate for r in measured for rate in r.tuned]
    print(f"{'aiohttp ceiling, plain':<34}{spread(plain):>22}")
    print(f"{'aiohttp ceiling, serve GC':<34}{spread(tuned):>22}")
    print(f"{'gateway deliverer':<34}{spread([r.gateway for r in measured]):>22}")
    for label, ratios in (
        ("ratio to the plain ceiling", [r.ratio(r.plain) for r in measured]),
        ("ratio to the serve-GC ceiling", [r.ratio(r.tuned) for r in measured]),
    ):
        each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"{label:<34}{statistics.median(ratios):>22.2f}   rounds: {each}")
    print("target: >= 0.40 of the raw aiohttp ceiling")
    print(
        f"{EVENTS} message_created events to one endpoint, {IN_FLIGHT} in flight on all sides; "
        "each round's ceiling of each kind the mean of its runs before and after the gateway's."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Webhook delivery benchmark.")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"default {ROUNDS}")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.receiver:app", "--port", str(port),
            "--log-level", "warning", "--no-access-log"]  # fmt: skip
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as name, \
            server(argv, port, Path(name) / "receiver.log"):  # fmt: skip
        uvloop.install()
        measured = asyncio.run(measure(f"http://127.0.0.1:{port}/hook", args.rounds))
    print_table(measured)
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
