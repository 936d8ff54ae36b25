"""The Python load generator bench/ingest.py falls back to when wrk is not installed.

Runs in its own process (multiprocessing, spawn), so the server under test never shares a core's
event loop with it. Raw asyncio protocol on uvloop, HTTP/1.1 keep-alive, one request in flight per
connection. Two modes:
- `rate=None`: closed loop, every connection sends its next request as soon as it has an answer
  (the maximum rate, like wrk);
- `rate=R`: open loop, requests fall due at R per second and wait for a free connection; latency is
  counted from when a request fell due, so a stalled server is not hidden (no coordinated omission).
Each line of the request file is `<X-Sandbox-Signature>\\t<JSON body>`; each is sent at most once.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop

PATH = "/hooks/sandbox"


@dataclass(frozen=True)
class LoadResult:
    requests: int  # answered
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    errors: int  # connection errors and unparseable answers
    exhausted: bool  # every prepared request was used before the time was up


def raw_requests(request_file: Path, port: int) -> list[bytes]:
    out = []
    for line in request_file.read_bytes().splitlines():
        signature, body = line.split(b"\t", 1)
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nX-Sandbox-Signature: {signature.decode()}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


def _answer(buffer: bytearray) -> tuple[int, int] | None:
    """(status, bytes used) once a whole answer is in the buffer."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
    if fields.get("transfer-encoding", "").lower() == "chunked":
        last = buffer.find(b"0\r\n\r\n", end + 4)
        return None if last < 0 else (status, last + 5)
    length = int(fields.get("content-length", "0"))
    total = end + 4 + length
    return (status, total) if len(buffer) >= total else None


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        answer = _answer(self._buffer)
        if answer is not None and self._waiter is not None and not self._waiter.done():
            del self._buffer[: answer[1]]
            self._waiter.set_result(answer[0])

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("the server closed the connection"))

    async def exchange(self, request: bytes) -> int:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Load:
    def __init__(self, requests: list[bytes], port: int, duration_s: float) -> None:
        self.requests = requests
        self.port = port
        self.duration_s = duration_s
        self.next = 0
        self.latencies_ns: list[int] = []
        self.non2xx = 0
        self.errors = 0
        self.exhausted = False

    def take(self) -> bytes | None:
        if self.next >= len(self.requests):
            self.exhausted = True
            return None
        self.next += 1
        return self.requests[self.next - 1]

    async def one(self, connection: _Connection, request: bytes, since_ns: int) -> bool:
        try:
            status = await connection.exchange(request)
        except (ConnectionError, ValueError, IndexError):
            self.errors += 1
            return False
        self.latencies_ns.append(time.perf_counter_ns() - since_ns)
        if not 200 <= status <= 299:
            self.non2xx += 1
        return True

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, "127.0.0.1", self.port)
        return protocol

    async def closed_loop_worker(self, deadline: float) -> None:
        connection = await self.connect()
        try:
            while time.perf_counter() < deadline and (request := self.take()) is not None:
                if not await self.one(connection, request, time.perf_counter_ns()):
                    return
        finally:
            connection.close()

    async def open_loop_worker(self, due: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        connection = await self.connect()
        try:
            while (job := await due.get()) is not None:
                if not await self.one(connection, job[1], job[0]):
                    return
        finally:
            connection.close()

    async def produce(self, due: asyncio.Queue[tuple[int, bytes] | None], rate: float) -> None:
        started_ns = time.perf_counter_ns()
        issued = 0
        while (elapsed_ns := time.perf_counter_ns() - started_ns) < self.duration_s * 1e9:
            while issued < int(elapsed_ns * rate / 1e9) and (request := self.take()) is not None:
                await due.put((started_ns + int(issued * 1e9 / rate), request))
                issued += 1
            await asyncio.sleep(0.0005)


async def _drive(load: _Load, connections: int, rate: float | None) -> float:
    started = time.perf_counter()
    if rate is None:
        deadline = started + load.duration_s
        await asyncio.gather(*(load.closed_loop_worker(deadline) for _ in range(connections)))
    else:
        due: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        workers = [asyncio.create_task(load.open_loop_worker(due)) for _ in range(connections)]
        await load.produce(due, rate)
        for _ in workers:
            await due.put(None)
        await asyncio.gather(*workers)
    return time.perf_counter() - started


def percentile_ms(sorted_ns: list[int], fraction: float) -> float:
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))] / 1e6


def _worker(
    request_file: str,
    port: int,
    connections: int,
    duration_s: float,
    rate: float | None,
    results: Any,
) -> None:
    load = _Load(raw_requests(Path(request_file), port), port, duration_s)
    seconds = uvloop.run(_drive(load, connections, rate))
    latencies = sorted(load.latencies_ns)
    results.put(
        LoadResult(
            len(latencies),
            seconds,
            percentile_ms(latencies, 0.50),
            percentile_ms(latencies, 0.99),
            load.non2xx,
            load.errors,
            load.exhausted,
        )
    )


def run(
    request_file: Path, port: int, connections: int, duration_s: float, rate: float | None = None
) -> LoadResult:
    """Drive the server from another process; closed loop, or open loop at `rate` requests/s."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(
        target=_worker,
        args=(str(request_file), port, connections, duration_s, rate, results),
        daemon=True,
    )
    process.start()
    deadline = time.monotonic() + duration_s + 60
    try:
        while True:
            try:
                result: LoadResult = results.get(timeout=0.5)
                return result
            except queue.Empty:
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the load generator ended without a result ({process.exitcode})"
                    ) from None
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
            process.join()
