"""End to end: carrier callback in -> customer webhook out, latency at a steady rate, one run.

Three processes besides this one, all on 127.0.0.1:
- `gateway serve` with a temporary config and SQLite file (bench/ingest.py's: sandbox carrier, no
  access log, no API rate limit; plus local webhook endpoints allowed), and a customer made with
  the CLI who owns a sandbox number and whose webhook points at
- the receiver (uvicorn, `receiver` below): answers 200 and notes when each `message_created`
  was read, keyed by the message's text;
- the driver (multiprocessing, spawn): signed sandbox inbound callbacks, each with its own id and
  text, posted to /hooks/sandbox open loop at --rate per second: WARMUP_S, then --duration
  seconds that are counted.
Latency counts from when a callback fell due (so a stalled gateway is not hidden) to when its
webhook was read, on CLOCK_MONOTONIC, one clock for every process on the machine. The baseline,
same run: the driver posting the same callbacks straight to the receiver (the harness's floor:
client, loopback, server). Prints count and p50/p90/p99/max in ms.
Run: `make bench` (or `.venv/bin/python bench/e2e.py [--rate R] [--duration S]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import queue
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import msgspec
import uvloop

from gateway.carriers.sandbox import SIGNATURE_HEADER, InboundEvent, signed_callback

if __package__ in (None, ""):  # run as a script: the repository root makes `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import allow_local_webhooks, free_port, gateway_cli, server
from bench.ingest import HOOK, OWNED, SECRET, SENDER, write_config
from bench.ingest_loadgen import percentile_ms

RATE = 200.0
DURATION_S = 10.0
WARMUP_S = 2.0
CONNECTIONS = 32
ARRIVAL_WAIT_S = 30.0  # for the last webhooks, once the driver is done

BASELINE = "baseline: driver -> receiver"
ANSWERED = "gateway: callback answered"
WEBHOOK = "gateway: callback -> webhook"


def clock_ns() -> int:
    """CLOCK_MONOTONIC: system-wide on Linux, so the driver's and receiver's readings compare."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# The receiver ------------------------------------------------------------------------------------


class _Data(msgspec.Struct):
    text: str = ""


class _Body(msgspec.Struct):
    """A customer webhook (`type`, `data`) or, in the baseline, the sandbox callback itself."""

    type: str = ""
    data: _Data | None = None
    event: str = ""
    text: str = ""


_body_decoder = msgspec.json.Decoder(_Body)


def arrival_key(body: bytes) -> str | None:
    try:
        got = _body_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    if got.type == "message_created" and got.data is not None:
        return got.data.text
    return got.text if got.event == "inbound" else None


class Receiver:
    """The customer endpoint: POST anything (200, arrival noted); GET returns the arrivals."""

    def __init__(self) -> None:
        self.arrivals: dict[str, int] = {}  # message text -> when it was read (clock_ns)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        read_ns = clock_ns()
        answer = b""
        if scope["method"] == "GET":
            answer = msgspec.json.encode(self.arrivals)
        elif (key := arrival_key(bytes(body))) is not None:
            self.arrivals.setdefault(key, read_ns)
        headers = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


receiver = Receiver()


def fetch_arrivals(port: int) -> dict[str, int]:
    response = httpx.get(f"http://127.0.0.1:{port}/arrivals", timeout=10.0)
    return msgspec.json.decode(response.content, type=dict[str, int])


# The driver --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    key: str  # the message text
    due_ns: int
    answered_ns: int
    status: int  # 0: no answer (connection error)


async def _post(session: aiohttp.ClientSession, url: str, key: str, due_ns: int) -> Sent:
    event = InboundEvent(id=f"e2e_{uuid.uuid4().hex}", from_=SENDER, to=OWNED, text=key)
    body, signature = signed_callback(SECRET, event, time.time())
    headers = {SIGNATURE_HEADER: signature, "content-type": "application/json"}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            status = response.status
    except aiohttp.ClientError:
        status = 0
    return Sent(key, due_ns, clock_ns(), status)


async def _drive(url: str, run: str, rate: float, count: int) -> list[Sent]:
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        started_ns = clock_ns()
        posts = []
        for i in range(count):
            due_ns = started_ns + int(i * 1e9 / rate)
            wait_s = (due_ns - clock_ns()) / 1e9
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            posts.append(asyncio.create_task(_post(session, url, f"e2e {run} {i}", due_ns)))
        return await asyncio.gather(*posts)


def _driver(url: str, run: str, rate: float, count: int, results: Any) -> None:
    results.put(uvloop.run(_drive(url, run, rate, count)))


def drive(url: str, rate: float, seconds: float) -> list[Sent]:
    """Callbacks at `rate` for `seconds`, open loop, from another process."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    count = int(rate * seconds)
    run = uuid.uuid4().hex[:8]
    args = (url, run, rate, count, results)
    process = context.Process(target=_driver, args=args, daemon=True)
    process.start()
    deadline = time.monotonic() + seconds + 60
    try:
        while True:
            try:
                sent: list[Sent] = results.get(timeout=0.5)
                return sent
            except queue.Empty:
                if not process.is_alive() or time.monotonic() > deadline:
                    why = f"the driver ended without a result ({process.exitcode})"
                    raise RuntimeError(why) from None
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()


# The run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latencies:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, spans_ns: list[int]) -> Latencies:
        ordered = sorted(spans_ns)
        top = ordered[-1] / 1e6 if ordered else float("nan")
        return cls(
            len(ordered),
            percentile_ms(ordered, 0.50),
            percentile_ms(ordered, 0.90),
            percentile_ms(ordered, 0.99),
            top,
        )


@dataclass
class Run:
    """One driver run: the callbacks counted (warm-up left out) and what became of them."""

    sent: list[Sent]
    arrivals: Mapping[str, int]

    @property
    def accepted(self) -> list[Sent]:
        return [s for s in self.sent if 200 <= s.status <= 299]

    def answered(self) -> Latencies:
        return Latencies.of([s.answered_ns - s.due_ns for s in self.accepted])

    def arrived(self) -> Latencies:
        spans = [self.arrivals[s.key] - s.due_ns for s in self.accepted if s.key in self.arrivals]
        return Latencies.of(spans)


def counted(sent: list[Sent], rate: float) -> list[Sent]:
    return sent[int(rate * WARMUP_S) :]


def wait_for_arrivals(port: int, keys: list[str]) -> dict[str, int]:
    deadline = time.monotonic() + ARRIVAL_WAIT_S
    while True:
        arrivals = fetch_arrivals(port)
        if all(key in arrivals for key in keys) or time.monotonic() > deadline:
            return arrivals
        time.sleep(0.25)


def set_up_customer(config: Path, webhook_uri: str) -> None:
    created = gateway_cli(
        config, "customers", "create", "--name", "e2e", "--webhook-uri", webhook_uri
    )
    customer = json.loads(created)["id"]
    gateway_cli(
        config, "numbers", "add", "--customer", customer, "--number", OWNED, "--carrier", "sandbox"
    )


def measure(folder: Path, rate: float, duration_s: float) -> tuple[Run, Run]:
    receiver_port, gateway_port = free_port(), free_port()
    argv = [sys.executable, "-m", "uvicorn", "bench.e2e:receiver", "--port", str(receiver_port)]
    argv += ["--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning"]
    seconds = WARMUP_S + duration_s
    with server(argv, receiver_port, folder / "receiver.log"):
        direct = counted(drive(f"http://127.0.0.1:{receiver_port}{HOOK}", rate, seconds), rate)
        baseline = Run(direct, wait_for_arrivals(receiver_port, [s.key for s in direct]))
        config = allow_local_webhooks(write_config(folder, gateway_port))
        set_up_customer(config, f"http://127.0.0.1:{receiver_port}/hook")
        argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        with server(argv, gateway_port, folder / "gateway.log"):
            sent = counted(drive(f"http://127.0.0.1:{gateway_port}{HOOK}", rate, seconds), rate)
            keys = [s.key for s in sent if 200 <= s.status <= 299]
            gateway = Run(sent, wait_for_arrivals(receiver_port, keys))
    return baseline, gateway


def print_table(baseline: Run, gateway: Run, rate: float, duration_s: float) -> None:
    rows = {
        BASELINE: baseline.arrived(),
        ANSWERED: gateway.answered(),
        WEBHOOK: gateway.arrived(),
    }
    print(f"{'end to end (ms)':<32}{'count':>7}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for name, f in rows.items():
        print(
            f"{name:<32}{f.count:>7}{f.p50_ms:>8.2f}{f.p90_ms:>8.2f}{f.p99_ms:>8.2f}{f.max_ms:>8.2f}"
        )
    base, webhook = rows[BASELINE], rows[WEBHOOK]
    print(f"{'webhook / baseline':<32}{'':>7}{webhook.p50_ms / base.p50_ms:>8.1f}"
          f"{webhook.p90_ms / base.p90_ms:>8.1f}{webhook.p99_ms / base.p99_ms:>8.1f}")  # fmt: skip
    print(
        f"open loop at {rate:g} callbacks/s for {duration_s:g} s after a {WARMUP_S:g} s warm-up "
        "(left out); each latency from when its callback fell due."
    )
    for name, run in (("baseline", baseline), ("gateway", gateway)):
        refused = len(run.sent) - len(run.accepted)
        lost = len(run.accepted) - run.arrived().count
        if refused or lost:
            print(f"note: {name}: {refused} callbacks not answered 2xx, {lost} webhooks missing")


def main() -> None:
    parser = argparse.ArgumentParser(description="Carrier callback -> customer webhook latency.")
    parser.add_argument("--rate", type=float, default=RATE, help="callbacks per second")
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds counted")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as name:
        baseline, gateway = measure(Path(name), args.rate, args.duration)
    print_table(baseline, gateway, args.rate, args.duration)
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
