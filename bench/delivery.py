"""Webhook delivery throughput against its ceiling, measured side by side in one run.

Starts a receiver (uvicorn, another process) on 127.0.0.1, then posts the same bodies to it:
1. the ceiling: a plain aiohttp client, as many requests in flight as the gateway's default;
2. the gateway: events queued in a fresh SQLite outbox and drained by its running workers
   (signing, address guard, attempt log, one commit per attempt), with the garbage-collector
   settings of `gateway serve`.
The ceiling runs before and after the gateway, and the ratio is against the mean of the two
(this machine's speed drifts within a run). Prints events/s and the ratio.
Run: `make bench` (or `.venv/bin/python bench/delivery.py`).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

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

from bench.common import free_port

EVENTS = 10_000
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
    tune_for_serving()  # as `gateway serve` does once started
    started = time.perf_counter()
    await gateway.start_workers()  # as `gateway serve` runs them
    while (await gateway.store.count_backlog())["webhook_events_pending"]:  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # the workers run in this loop; a light query, 50 times a second
    rate = EVENTS / (time.perf_counter() - started)
    await gateway.close()
    return rate, body


async def measure(url: str) -> tuple[float, float, float]:
    """The ceiling before and after the gateway (this machine's speed drifts within a run),
    and the gateway's rate between them."""
    now = format_time(SystemClock().now())
    body = events.event_body(EventType.MESSAGE_CREATED, sample(str(uuid.uuid4()), now))
    before = await ceiling(url, body)
    with tempfile.TemporaryDirectory() as folder:
        gateway, _ = await gateway_rate(url, Path(folder))
    return before, gateway, await ceiling(url, body)


def main() -> None:
    port = free_port()
    receiver = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "uvicorn", "bench.receiver:app", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
    )  # fmt: skip
    try:
        time.sleep(1.5)
        uvloop.install()
        before, gateway, after = asyncio.run(measure(f"http://127.0.0.1:{port}/hook"))
    finally:
        receiver.terminate()
        receiver.wait()
    raw = (before + after) / 2
    print(f"{'delivery (events/s)':<28}{'value':>10}")
    print(f"{'aiohttp ceiling, before':<28}{before:>10.0f}")
    print(f"{'gateway deliverer':<28}{gateway:>10.0f}")
    print(f"{'aiohttp ceiling, after':<28}{after:>10.0f}")
    print(f"{'ratio to the mean ceiling':<28}{gateway / raw:>10.2f}   (target >= 0.40)")


if __name__ == "__main__":
    main()
