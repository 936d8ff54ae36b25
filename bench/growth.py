"""Growth: list latency, memory and disk with SMALL and --messages stored messages, one run.

Each size gets its own SQLite file: the gateway's schema (a `gateway customers create` on a fresh
file migrates it), then rows put straight in by bench/growth_fill.py, shaped as the gateway writes
them: 90 % of the messages belong to one customer, the rest to 9 others, interleaved in time; each
with one target, its carrier reference, its callback's idempotency key and its delivered
`message_created` event with the attempt log. Then:
1. disk: the file (+ WAL) per 10^6 messages, and by table with its indexes (dbstat);
2. list latency: `gateway serve` on each file, both running, GET /v1.0/messages over HTTP as the
   big customer (a JWT from `gateway tokens issue`), one request at a time, alternating between
   the two sizes, REPEATS per case after WARMUP: the first page (default size, and
   page_size=100), the next page (the first's next_page_token) and a page from the middle;
3. memory: every webhook event put back to pending and due, every endpoint a port that refuses
   connections; `gateway serve` started on each file in turn and left to its workers for
   RSS_WAIT_S; then VmRSS and VmHWM of its process and of its child, the normaliser
   (/proc/<pid>/status), added together.
Prints each figure at both sizes and the ratio. Run: `make bench` (or `.venv/bin/python
bench/growth.py [--messages N]`; N defaults to 10^6, the small size stays 10^3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from gateway.clock import NEVER, SystemClock, format_time

if __package__ in (None, ""):  # run as a script: the repository root makes `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import allow_local_webhooks, free_port, gateway_cli, query, server
from bench.growth_fill import Owners, add_customers, fill, make_pending
from bench.ingest import write_config
from bench.ingest_loadgen import percentile_ms

SMALL = 1_000
LARGE = 1_000_000
OTHER_CUSTOMERS = 9
REPEATS = 300
WARMUP = 30
RSS_WAIT_S = 10.0

FIRST = "first page"
FIRST_100 = "first page, page_size=100"
NEXT_100 = "next page, page_size=100"
MIDDLE_100 = "middle page, page_size=100"
PAGE_SIZES = {FIRST: 10, FIRST_100: 100, NEXT_100: 100, MIDDLE_100: 100}


@dataclass
class Size:
    """One database and its figures."""

    messages: int
    folder: Path
    port: int = 0
    config: Path = Path()
    customer: str = ""  # the big one
    fill_s: float = 0.0
    bytes_total: int = 0
    bytes_by_table: dict[str, int] = field(default_factory=dict)
    start_s: float = 0.0
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # case: (p50, p99)
    rss_mb: dict[str, float] = field(default_factory=dict)
    attempts: int = 0

    @property
    def database(self) -> Path:
        return self.folder / "gateway.db"

    @property
    def label(self) -> str:
        power = round(math.log10(self.messages))
        return f"10^{power}" if 10**power == self.messages else f"{self.messages:,}"

    def serve(self, log: str) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        argv = [sys.executable, "-m", "gateway", "serve", "--config", str(self.config)]
        return server(argv, self.port, self.folder / log)


# Disk --------------------------------------------------------------------------------------------


def prepare(size: Size, dead_url: str) -> None:
    size.folder.mkdir()
    size.port = free_port()
    size.config = allow_local_webhooks(write_config(size.folder, size.port))
    created = gateway_cli(
        size.config, "customers", "create", "--name", "big", "--webhook-uri", dead_url
    )
    size.customer = json.loads(created)["id"]
    now = format_time(SystemClock().now())
    owners = Owners(size.customer, add_customers(size.database, OTHER_CUSTOMERS, dead_url, now))
    started = time.monotonic()
    fill(size.database, size.messages, owners, dead_url)
    size.fill_s = time.monotonic() - started
    wal = size.database.with_name(size.database.name + "-wal")
    size.bytes_total = size.database.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    rows = query(
        size.database,
        "SELECT s.tbl_name, sum(d.pgsize) FROM dbstat d JOIN sqlite_schema s ON s.name = d.name "
        "GROUP BY s.tbl_name",
    )
    size.bytes_by_table = {str(table): int(str(total)) for table, total in rows}


# List latency ------------------------------------------------------------------------------------


def middle_token(size: Size) -> str:
    """`tm_create|id` of the big customer's middle message, as next_page_token would be."""
    where = "FROM messages WHERE customer_id = ? AND tm_delete = ?"
    [(count,)] = query(size.database, f"SELECT count(*) {where}", (size.customer, NEVER))
    [(tm_create, message_id)] = query(
        size.database,
        f"SELECT tm_create, id {where} ORDER BY tm_create DESC, id DESC LIMIT 1 OFFSET ?",
        (size.customer, NEVER, int(str(count)) // 2),
    )
    return f"{tm_create}|{message_id}"


class Lister:
    """GET /v1.0/messages on one gateway as its big customer; checks every answer."""

    def __init__(self, session: aiohttp.ClientSession, size: Size, token: str) -> None:
        self.session = session
        self.size = size
        self.url = f"http://127.0.0.1:{size.port}/v1.0/messages"
        self.headers = {"authorization": f"Bearer {token}"}

    async def get(self, query_string: str, want: int) -> tuple[int, str]:
        """(nanoseconds taken, next_page_token)."""
        started = time.perf_counter_ns()
        async with self.session.get(f"{self.url}{query_string}", headers=self.headers) as answer:
            body = await answer.read()
        took_ns = time.perf_counter_ns() - started
        page = json.loads(body) if answer.status == 200 else {}
        if len(page.get("result", ())) != want:
            raise RuntimeError(f"GET {self.url}{query_string}: {answer.status} {body[:200]!r}")
        return took_ns, str(page["next_page_token"])

    async def queries(self) -> dict[str, str]:
        _, next_token = await self.get("?page_size=100", 100)
        paged = "?page_size=100&page_token="
        return {
            FIRST: "",
            FIRST_100: "?page_size=100",
            NEXT_100: paged + next_token,
            MIDDLE_100: paged + middle_token(self.size),
        }


async def compare_lists(sizes: list[Size], tokens: list[str]) -> None:
    async with aiohttp.ClientSession() as session:
        listers = [Lister(session, size, token) for size, token in zip(sizes, tokens, strict=True)]
        queries = [await lister.queries() for lister in listers]
        for case, want in PAGE_SIZES.items():
            spans: list[list[int]] = [[] for _ in listers]
            for n in range(WARMUP + REPEATS):
                for lister, asked, taken in zip(listers, queries, spans, strict=True):
                    took_ns, _ = await lister.get(asked[case], want)
                    if n >= WARMUP:
                        taken.append(took_ns)
            for size, taken in zip(sizes, spans, strict=True):
                taken.sort()
                size.latency_ms[case] = (percentile_ms(taken, 0.50), percentile_ms(taken, 0.99))


def measure_lists(sizes: list[Size]) -> None:
    tokens = [
        gateway_cli(size.config, "tokens", "issue", "--customer", size.customer).strip()
        for size in sizes
    ]
    with contextlib.ExitStack() as running:
        for size in sizes:
            started = time.monotonic()
            running.enter_context(size.serve("list.log"))
            size.start_s = time.monotonic() - started
        asyncio.run(compare_lists(sizes, tokens))


# Memory ------------------------------------------------------------------------------------------


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of the process and its children (`gateway serve` runs the normaliser in
    one), added together."""
    totals = dict.fromkeys(("VmRSS", "VmHWM"), 0.0)
    for one in (pid, *children(pid)):
        lines = Path(f"/proc/{one}/status").read_text().splitlines()
        fields = dict(line.split(":", 1) for line in lines)
        for name in totals:
            totals[name] += int(fields[name].split()[0]) / 1024
    return totals


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def measure_memory(size: Size) -> None:
    make_pending(size.database, format_time(SystemClock().now()))
    [(before,)] = query(size.database, "SELECT count(*) FROM webhook_attempts")
    with size.serve("rss.log") as process:
        time.sleep(0.5)  # the normaliser's process is started with the workers
        size.rss_mb["at start"] = status_mb(process.pid)["VmRSS"]
        time.sleep(RSS_WAIT_S)
        now = status_mb(process.pid)
        size.rss_mb[f"after {RSS_WAIT_S:g} s"] = now["VmRSS"]
        size.rss_mb["peak (VmHWM)"] = now["VmHWM"]
    [(after,)] = query(size.database, "SELECT count(*) FROM webhook_attempts")
    size.attempts = int(str(after)) - int(str(before))


# Printing ----------------------------------------------------------------------------------------


def per_million_mb(size: Size, count: int) -> str:
    return f"{count / size.messages * 1e6 / 2**20:.0f}"


def line(label: str, *cells: str) -> None:
    print(f"{label:<36}" + "".join(f"{cell:>11}" for cell in cells))


def print_latency(small: Size, large: Size) -> None:
    a, b = small.label, large.label
    line(
        "growth: GET /v1.0/messages (ms)", f"{a} p50", "p99", f"{b} p50", "p99", "ratio p50", "p99"
    )
    for case in PAGE_SIZES:
        (s50, s99), (l50, l99) = small.latency_ms[case], large.latency_ms[case]
        ms = (f"{value:.2f}" for value in (s50, s99, l50, l99, l50 / s50, l99 / s99))
        line(case, *ms)
    line(f"target at {b}", "", "", "", "", "<= 1.50")


def print_resources(small: Size, large: Size) -> None:
    line("", small.label, large.label, "ratio")
    for name, before in small.rss_mb.items():
        after = large.rss_mb[name]
        line(f"RSS, {name} (MB)", f"{before:.1f}", f"{after:.1f}", f"{after / before:.2f}")
    line(f"RSS target at {large.label} pending", "", "<= 200")
    rates = (f"{size.attempts / RSS_WAIT_S:.0f}" for size in (small, large))
    line(f"webhook attempts/s in those {RSS_WAIT_S:g} s", *rates)
    line("start-up of gateway serve (s)", f"{small.start_s:.2f}", f"{large.start_s:.2f}")
    line("fill (s; the benchmark's own)", f"{small.fill_s:.1f}", f"{large.fill_s:.1f}")
    total = (per_million_mb(size, size.bytes_total) for size in (small, large))
    line("disk, MB per 10^6 messages", *total)
    for table, size_bytes in sorted(large.bytes_by_table.items(), key=lambda item: -item[1]):
        if size_bytes * 1e6 / large.messages >= 2**20:  # 1 MB per 10^6 messages or more
            small_bytes = small.bytes_by_table.get(table, 0)
            line(
                f"  {table} + indexes",
                *(per_million_mb(s, n) for s, n in ((small, small_bytes), (large, size_bytes))),
            )


def print_table(small: Size, large: Size) -> None:
    print_latency(small, large)
    print()
    print_resources(small, large)
    print(
        f"list: one request at a time over HTTP, the two sizes in turn, {REPEATS} per case after "
        f"{WARMUP}; the customer listed owns 90 % of the messages. RSS: every event pending and "
        "due, every endpoint refusing connections, so the circuit breaker pauses each after 10 "
        "failures in a row (the attempts/s line is its doing). Disk: each message with 1 target, "
        "1 carrier reference, 1 callback key, 1 webhook event and 1 logged attempt (outbound "
        "messages have 3 events in life, and nothing is ever pruned)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Growth benchmark: list latency, memory, disk.")
    parser.add_argument("--messages", type=int, default=LARGE, help="the large size")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as name:
        dead_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
        sizes = [Size(SMALL, Path(name) / "small"), Size(args.messages, Path(name) / "large")]
        for size in sizes:
            prepare(size, dead_url)
        measure_lists(sizes)
        for size in sizes:
            measure_memory(size)
        print_table(*sizes)
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
