"""Carrier-callback ingest against a bare Starlette handler, measured side by side in one run.

Everything runs as a user deploys it, on 127.0.0.1, each server in its own process and the load
generator in another (wrk when installed, else the Python one in bench/ingest_loadgen.py):
1. the baseline: a bare Starlette POST handler answering 200 `{"ok":true}`, on uvicorn with the
   settings of `gateway serve` (httptools, uvloop, one worker, no access log);
2. the gateway: `gateway serve` with a temporary config and SQLite file, a customer and a number
   made with the CLI, taking signed sandbox callbacks, each with its own `id` (no duplicate
   shortcut): (a) inbound SMS to the owned number, (b) delivery reports, each for a target still
   `sent`: a few messages are sent through the API and dispatched to the sandbox (`dlr_delay_s`
   is an hour, so its own reports stay out), and before each report run one of them is copied,
   row for row, as many times as the run may need (bench/ingest_targets.py).
Both servers are up side by side, and the runs come in rounds (three by default): in each, the
bare handler, then the gateway's inbound and report callbacks, at their maximum rates. This
machine's speed drifts over minutes (one 10 s run against the next has varied by a tenth), so
each maximum-rate ratio is the gateway's run over the bare handler's run of its round, and the
table gives the median over the rounds with their range, every round's ratio beside it. Then the
gateway's latency at half its (median) maximum inbound rate, as many times, driven open loop at
that fixed rate: by wrk paced from a Lua script (wrk2's idea; wrk2 is not in Debian), and once, as a
cross-check, by the Python generator, which times each request from when it fell due but takes
about a core itself (so its p99 against the bare handler alone has been 2 to 18 ms here). Both
drive the bare handler too, at the same rate; the half-rate rows' ratios are to the median
baseline. Callback ids are random, as carriers' are.
A 2xx means a callback is in the inbox; the normaliser turns it into a message after. So after
each maximum-rate run the benchmark waits until the inbox is empty and also prints the rate
sustained over run + drain (callbacks normalised per second). The gateway's warm-up is drained
too, so each run starts with an empty inbox.
Signatures are made just before each run (they are valid for 300 s).
Run: `make bench` (or `.venv/bin/python bench/ingest.py [--loadgen python] [--rounds N]`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.carriers.sandbox import InboundEvent, StatusEvent, signed_callback

if __package__ in (None, ""):  # run as a script: the repository root makes `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, free_port, gateway_cli, query, server, spread
from bench.ingest_targets import copy_sent

HOOK = "/hooks/sandbox"
SECRET = "bench-sandbox-secret"  # noqa: S105 - a throwaway config's secret
OWNED = "+15550100000"  # the customer's number: inbound goes to it, sends come from it
SENDER = "+15557654321"
DURATION_S = 10.0
ROUNDS = 3  # of each run: one 10 s run against another has varied by a tenth here
WARMUP_S = 1.0
CONNECTIONS = 64
SENT_FOR_REAL = 50  # messages sent through the API: the copies' template is one of them
COPIES_PER_INBOUND = 1.5  # `sent` targets per round: this times the round's inbound callbacks
DISPATCH_WAIT_S = 30.0
DRAIN_WAIT_S = 300.0

BASELINE = "baseline (bare Starlette)"
INBOUND = "gateway inbound"
REPORTS = "gateway status reports"
HALF = "gateway inbound, half rate"
HALF_PYTHON = "gateway half, Python generator"
BASELINE_HALF = "baseline at the same rate"
BASELINE_HALF_PYTHON = "baseline half, Python gen."


# The baseline ------------------------------------------------------------------------------------


async def _ok(request: Request) -> Response:
    await request.body()
    return JSONResponse({"ok": True})


baseline_app = Starlette(routes=[Route(HOOK, _ok, methods=["POST"])])


# Processes ---------------------------------------------------------------------------------------


def ensure_wrk() -> str | None:
    """wrk's path; installs the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("wrk is not installed; running `apt-get install -y wrk` (as root)", flush=True)
    argv = ["apt-get", "install", "-y", "-q", "wrk"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    print(f"apt-get install -y wrk: exit {done.returncode}", flush=True)
    return shutil.which("wrk")


# Requests ----------------------------------------------------------------------------------------


def write_requests(path: Path, events: list[InboundEvent | StatusEvent]) -> Path:
    """One `<X-Sandbox-Signature>\\t<body>` line per callback, all signed now. On disk before
    it returns: left to the kernel, the file (tens of MB) is written back about 30 s later, in
    the middle of a later run, and the gateway's commits queue behind it."""
    now_s = time.time()
    with path.open("wb") as out:
        for event in events:
            body, signature = signed_callback(SECRET, event, now_s)
            out.write(signature.encode() + b"\t" + body + b"\n")
        out.flush()
        os.fsync(out.fileno())
    return path


# Callback ids are random, as carriers' are (Twilio's SM..., Telnyx's UUIDs): sequential ones
# would keep the deduplication index's writes at its end, cheaper than in production.


def inbound_events(count: int) -> list[InboundEvent | StatusEvent]:
    return [
        InboundEvent(
            id=f"bench_in_{uuid.uuid4().hex}", from_=SENDER, to=OWNED, text="hello, ingest"
        )
        for _ in range(count)
    ]


def status_events(count: int, carrier_ids: list[str]) -> list[InboundEvent | StatusEvent]:
    return [
        StatusEvent(
            id=f"bench_dlr_{uuid.uuid4().hex}",
            message_id=carrier_ids[i % len(carrier_ids)],
            status="delivered",
            parts=1,
        )
        for i in range(count)
    ]


# Load generators ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int  # answered
    non2xx: int
    errors: int  # connect/read/write errors and timeouts
    prepared: int  # distinct callbacks prepared; fewer than `requests` means ids were reused
    generator_cpu: float = 0.0  # the load generator's CPU time over the run's, in cores
    late: int = 0  # paced runs: requests sent over 1 ms after they fell due (no free connection)


WRK_SCRIPT = """
-- Written by bench/ingest.py: each thread cycles through its share of pre-signed callbacks.
-- Arguments: request file, threads, and for a paced run the rate per thread.
local threads, count = {}, 0
function setup(thread)
  thread:set("tid", count)
  count = count + 1
  table.insert(threads, thread)
end
function init(args)
  local nthreads = tonumber(args[2])
  interval_us = args[3] and 1e6 / tonumber(args[3])
  requests, index, non2xx, slot, late, max_late_us = {}, 0, 0, 0, 0, 0
  local n = 0
  for line in io.lines(args[1]) do
    if n % nthreads == tid then
      local signature, body = line:match("^([^\\t]*)\\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", nil,
        {["Content-Type"] = "application/json", ["X-Sandbox-Signature"] = signature}, body)
    end
    n = n + 1
  end
end
function request()
  index = index % #requests + 1
  return requests[index]
end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local non2xx, late, max_late_us = 0, 0, 0
  for _, thread in ipairs(threads) do
    non2xx = non2xx + thread:get("non2xx")
    late = late + thread:get("late")
    max_late_us = math.max(max_late_us, thread:get("max_late_us"))
  end
  local e = summary.errors
  io.write(string.format(
    "INGEST requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d late=%d "
    .. "max_late_us=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), non2xx,
    e.connect + e.read + e.write + e.timeout, late, max_late_us))
end
"""

# Open loop at a fixed rate (wrk2's idea, which Debian does not package): request k falls due at
# start + k / rate; a connection that comes free takes the next one due and waits for it (wrk's
# timers have 1 ms steps). wrk times a request from when it is written, so one sent late because
# every connection was busy would hide the stall (coordinated omission): such sends are counted,
# and the run is flagged when they pass 1 %.
WRK_PACING = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock, bench_timespec *now);
]]
local now_ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, now_ts) -- CLOCK_MONOTONIC
  return tonumber(now_ts.tv_sec) * 1e6 + tonumber(now_ts.tv_nsec) / 1e3
end
function delay()
  local now = now_us()
  start_us = start_us or now
  local wait_us = start_us + slot * interval_us - now
  slot = slot + 1
  if wait_us < -1000 then
    late = late + 1
    max_late_us = math.max(max_late_us, -wait_us)
  end
  return wait_us > 0 and math.floor(wait_us / 1000 + 0.5) or 0
end
"""


def count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for _ in lines)


def children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def wrk_run(
    wrk: str, folder: Path, requests: Path, port: int, duration_s: float, rate: float | None = None
) -> Figures:
    """At the maximum rate (closed loop), or paced at `rate` per second (open loop)."""
    script = folder / ("ingest-paced.lua" if rate else "ingest.lua")
    script.write_text(WRK_SCRIPT + (WRK_PACING if rate else ""))
    url = f"http://127.0.0.1:{port}{HOOK}"
    argv = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{duration_s:g}s", "--timeout", "5s"]
    argv += ["-s", str(script), url, "--", str(requests), "1", *([f"{rate:.1f}"] if rate else [])]
    cpu_before_s = children_cpu_s()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    cpu_s = children_cpu_s() - cpu_before_s
    line = next((x for x in done.stdout.splitlines() if x.startswith("INGEST ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    got = {k: int(v) for k, v in (f.split("=") for f in line.split()[1:])}
    return Figures(
        got["requests"] / (got["duration_us"] / 1e6),
        got["p50_us"] / 1e3,
        got["p99_us"] / 1e3,
        got["requests"],
        got["non2xx"],
        got["errors"],
        count_lines(requests),
        cpu_s / (got["duration_us"] / 1e6),
        got["late"],
    )


def python_run(requests: Path, port: int, duration_s: float, rate: float | None) -> Figures:
    from bench import ingest_loadgen  # here: importable once main() has put ROOT on sys.path

    cpu_before_s = children_cpu_s()
    got = ingest_loadgen.run(requests, port, CONNECTIONS, duration_s, rate)
    cpu_s = children_cpu_s() - cpu_before_s
    prepared = count_lines(requests)
    if got.exhausted:
        print(f"note: all {prepared} prepared requests were used before the time was up")
    return Figures(
        got.requests / got.seconds,
        got.p50_ms,
        got.p99_ms,
        got.requests,
        got.non2xx,
        got.errors,
        prepared,
        cpu_s / got.seconds,
    )


@dataclass
class Bench:
    wrk: str | None
    folder: Path
    rows: dict[str, list[Figures]] = field(default_factory=dict)  # a run per round
    warmups: list[Figures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    drained: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # run s, drain s
    half_rate: float = 0.0  # callbacks/s, the paced runs'
    copy_s: list[float] = field(default_factory=list)  # making each round's `sent` targets

    def record(self, name: str, figures: Figures) -> Figures:
        self.rows.setdefault(name, []).append(figures)
        return figures

    def max_rate(self, requests: Path, port: int, duration_s: float = DURATION_S) -> Figures:
        try:
            if self.wrk:
                return wrk_run(self.wrk, self.folder, requests, port, duration_s)
            return python_run(requests, port, duration_s, None)
        finally:
            requests.unlink()  # tens of MB each, and a run of several rounds writes many

    def paced(self, requests: Path, port: int, rate: float) -> Figures:
        try:
            if self.wrk:
                return wrk_run(self.wrk, self.folder, requests, port, DURATION_S, rate)
            return python_run(requests, port, DURATION_S, rate)
        finally:
            requests.unlink()

    def sustained(self, name: str, figures: Figures) -> None:
        """Wait for the inbox to empty; note the rate callbacks were normalised at over run +
        drain (the run's answers over the run's time plus the wait)."""
        drain_s = wait_drained(self.folder / "gateway.db")
        run_s = figures.requests / figures.rps
        self.drained.setdefault(name, []).append((run_s, drain_s))

    def warm_up(self, port: int) -> None:
        requests = write_requests(self.folder / "warm.txt", inbound_events(40_000))
        self.warmups.append(self.max_rate(requests, port, WARMUP_S))


# The gateway -------------------------------------------------------------------------------------


def write_config(folder: Path, port: int) -> Path:
    config = folder / "gateway.toml"
    config.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}
public_url = "http://127.0.0.1:{port}"
access_log = false  # the baseline runs without one too

[api]
rate_limit_per_s = 0

[database]
path = {json.dumps(str(folder / "gateway.db"))}

[auth]
jwt_secret = "bench-jwt-secret"

[dispatch]
# Only speeds up sending the messages the delivery reports are for (not measured).
concurrency = 64

[carriers.sandbox]
secret = "{SECRET}"
dlr_delay_s = 3600
fail_destinations = []
"""
    )
    return config


def set_up_customer(config: Path) -> str:
    """A customer owning OWNED (sandbox); returns an access key for the API."""
    customer = json.loads(gateway_cli(config, "customers", "create", "--name", "bench"))["id"]
    gateway_cli(
        config, "numbers", "add", "--customer", customer, "--number", OWNED, "--carrier", "sandbox"
    )
    return gateway_cli(config, "accesskeys", "create", "--customer", customer).strip()


async def send_messages(port: int, access_key: str, messages: int) -> None:
    url = f"http://127.0.0.1:{port}/v1.0/messages?accesskey={access_key}"
    limit = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as session:

        async def send(m: int) -> None:
            body = {
                "source": {"type": "tel", "target": OWNED},
                "destinations": [{"type": "tel", "target": f"+1666{m:07d}"}],  # the usual send
                "text": "hello, this is test message.",
            }
            async with limit, session.post(url, json=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"send refused: {response.status} {await response.text()}")

        await asyncio.gather(*(send(m) for m in range(messages)))


SENT = "SELECT message_id FROM targets WHERE status = 'sent' AND carrier_message_id != ''"


def wait_drained(database: Path) -> float:
    """Seconds until every callback in the inbox is normalised."""
    inbox = database.with_name(f"{database.stem}.inbox{database.suffix}")
    started = time.monotonic()
    while time.monotonic() - started < DRAIN_WAIT_S:
        [(applied,)] = query(database, "SELECT applied_through FROM inbox_cursor")
        last = query(inbox, "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'")
        if not last or int(str(applied)) >= int(str(last[0][0])):
            return time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"the inbox did not empty in {DRAIN_WAIT_S:g} s")


def sent_messages(database: Path, want: int) -> list[str]:
    """The ids of messages with a target `sent`, once `want` are (or DISPATCH_WAIT_S is up)."""
    deadline = time.monotonic() + DISPATCH_WAIT_S
    while True:
        rows = query(database, SENT)
        if len(rows) >= want or time.monotonic() > deadline:
            return [str(row[0]) for row in rows]
        time.sleep(0.25)


# The run -----------------------------------------------------------------------------------------


def baseline_argv(port: int) -> list[str]:
    argv = [sys.executable, "-m", "uvicorn", "bench.ingest:baseline_app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--http", "httptools", "--loop", "uvloop", "--workers", "1"]
    return [*argv, "--no-access-log", "--log-level", "warning"]


def measure(bench: Bench, rounds: int) -> None:
    """Both servers up side by side; each round runs the bare handler, then the gateway's
    inbound and report callbacks, at their maximum rates, so each ratio compares runs a minute
    apart (this machine's speed drifts over minutes: one 10 s run against another has varied by
    a tenth). Then the half-rate runs, as many, each followed by the bare handler driven alike."""
    base_port, port = free_port(), free_port()
    config = write_config(bench.folder, port)
    access_key = set_up_customer(config)
    gateway = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    log = bench.folder / "gateway.log"
    with (
        server(baseline_argv(base_port), base_port, bench.folder / "baseline.log"),
        server(gateway, port, log),
    ):
        bench.warm_up(base_port)
        bench.warm_up(port)
        template = send_for_reports(bench, port, access_key)
        wait_drained(bench.folder / "gateway.db")  # the warm-up's: the first run starts empty
        for _ in range(rounds):
            measure_round(bench, base_port, port, template)
        bench.half_rate = statistics.median([f.rps for f in bench.rows[INBOUND]]) / 2
        for _ in range(rounds):
            measure_half(bench, base_port, port, bench.half_rate)
        if bench.wrk:  # the cross-check: the generator whose latency counts from each due time
            measure_half_python(bench, base_port, port, bench.half_rate)
    access_lines = log.read_bytes().count(b'"POST /hooks/sandbox')
    if access_lines:
        bench.notes.append(f"`gateway serve` wrote {access_lines} access-log lines (uvicorn's)")
    check_stored(bench)


def measure_round(bench: Bench, base_port: int, port: int, template: str) -> None:
    requests = write_requests(bench.folder / "base.txt", inbound_events(400_000))
    baseline = bench.record(BASELINE, bench.max_rate(requests, base_port))
    enough = int(baseline.rps * DURATION_S * 1.3) + 1000  # more than the gateway can take
    inbound = write_requests(bench.folder / "in.txt", inbound_events(enough))
    inbound_figures = bench.record(INBOUND, bench.max_rate(inbound, port))
    bench.sustained(INBOUND, inbound_figures)
    report_ids = fresh_targets(bench, template, int(inbound_figures.requests * COPIES_PER_INBOUND))
    reports = write_requests(bench.folder / "dlr.txt", status_events(enough, report_ids))
    figures = bench.record(REPORTS, bench.max_rate(reports, port))
    bench.sustained(REPORTS, figures)
    if figures.requests > len(report_ids):
        bench.notes.append(
            f"status reports, round {len(bench.rows[REPORTS])}: {len(report_ids)} of "
            f"{figures.requests} found their target `sent`; the rest (unique ids too) came for "
            "targets already `delivered`"
        )


def fresh_targets(bench: Bench, template: str, count: int) -> list[str]:
    """`count` targets `sent` (copies of the template's), for this round's reports alone, in an
    order of their own: in the order made, each report would find its target next to the last
    one's (a best case; carriers report out of order)."""
    started = time.monotonic()
    carrier_ids = copy_sent(bench.folder / "gateway.db", template, count)
    bench.copy_s.append(time.monotonic() - started)
    random.shuffle(carrier_ids)
    return carrier_ids


def measure_half(bench: Bench, base_port: int, port: int, rate: float) -> None:
    enough = int(rate * DURATION_S * 1.3) + 1000
    half = write_requests(bench.folder / "half.txt", inbound_events(enough))
    bench.sustained(HALF, bench.record(HALF, bench.paced(half, port, rate)))
    half = write_requests(bench.folder / "base-half.txt", inbound_events(enough))
    bench.record(BASELINE_HALF, bench.paced(half, base_port, rate))


def measure_half_python(bench: Bench, base_port: int, port: int, rate: float) -> None:
    enough = int(rate * DURATION_S * 1.3) + 1000
    half = write_requests(bench.folder / "half-py.txt", inbound_events(enough))
    figures = bench.record(HALF_PYTHON, python_run(half, port, DURATION_S, rate))
    half.unlink()
    bench.sustained(HALF_PYTHON, figures)
    half = write_requests(bench.folder / "base-py.txt", inbound_events(enough))
    bench.record(BASELINE_HALF_PYTHON, python_run(half, base_port, DURATION_S, rate))
    half.unlink()


def send_for_reports(bench: Bench, port: int, access_key: str) -> str:
    """A few messages sent through the API and dispatched to the sandbox; the id of the one the
    reports' targets are copied from. Dispatch is over before the first run (it would compete
    with it)."""
    started = time.monotonic()
    asyncio.run(send_messages(port, access_key, SENT_FOR_REAL))
    ids = sent_messages(bench.folder / "gateway.db", SENT_FOR_REAL)
    took = time.monotonic() - started
    if len(ids) < SENT_FOR_REAL:
        raise RuntimeError(f"{len(ids)} of {SENT_FOR_REAL} messages dispatched in {took:.0f} s")
    return ids[0]


def check_stored(bench: Bench) -> None:
    """What the gateway's database holds against the callbacks it answered 2xx."""
    database = bench.folder / "gateway.db"
    [(inbound,)] = query(database, "SELECT count(*) FROM messages WHERE direction = 'inbound'")
    [(delivered,)] = query(database, "SELECT count(*) FROM targets WHERE status = 'delivered'")
    [(unrouted,)] = query(database, "SELECT count(*) FROM unrouted_inbound")
    runs = [bench.warmups[1], *bench.rows[INBOUND], *bench.rows[HALF]]
    runs += bench.rows.get(HALF_PYTHON, [])
    answered = sum(f.requests - f.non2xx for f in runs)
    in_flight = f"; wrk ends each run with up to {CONNECTIONS} in flight, stored but not counted"
    in_flight = in_flight if bench.wrk else ""
    bench.notes.append(
        f"stored: {inbound} inbound messages for {answered} inbound callbacks answered 2xx "
        f"(unrouted {unrouted}{in_flight}); {delivered} targets `delivered`"
    )


def print_table(bench: Bench) -> None:
    rows = bench.rows
    baselines = [f.rps for f in rows[BASELINE]]
    base_rps = statistics.median(baselines)
    ratios = {
        name: [g.rps / b for g, b in zip(rows[name], baselines, strict=True)]
        for name in (INBOUND, REPORTS)
    }
    rounds = len(baselines)
    print(f"ingest, {rounds} round(s): medians, (min-max) over the rounds")
    head = f"{'':<31}{'req/s':>19}{'p50 ms':>8}{'p99 ms':>20}{'ratio':>20}{'non-2xx':>8}"
    print(f"{head}{'gen. cpu':>9}")
    order = [BASELINE, INBOUND, REPORTS, HALF, HALF_PYTHON, BASELINE_HALF, BASELINE_HALF_PYTHON]
    for name in (n for n in order if n in rows):
        runs = rows[name]
        ratio = ratios.get(name, [f.rps / base_rps for f in runs])
        print(
            f"{name:<31}{spread([f.rps for f in runs], 0):>19}"
            f"{statistics.median([f.p50_ms for f in runs]):>8.2f}"
            f"{spread([f.p99_ms for f in runs], 2):>20}"
            f"{spread(ratio, 2):>20}{sum(f.non2xx for f in runs):>8}"
            f"{statistics.median([f.generator_cpu for f in runs]):>9.2f}"
        )
    print(f"{'baseline per round':<31}{', '.join(f'{b:.0f}' for b in baselines)}")
    print_targets(bench, ratios)
    print_sustained(bench, base_rps)
    print_notes(bench)


def print_targets(bench: Bench, ratios: dict[str, list[float]]) -> None:
    for name, target in ((INBOUND, "inbound"), (REPORTS, "reports")):
        each = ", ".join(f"{r:.2f}" for r in ratios[name])
        label = f"ratio {target} (target >= 0.50)"
        print(f"{label:<31}{statistics.median(ratios[name]):>8.2f}  rounds: {each}")
    half_p99 = [f.p99_ms for f in bench.rows[HALF]]
    each = ", ".join(f"{p:.2f}" for p in half_p99)
    print(f"{'p99 at half rate (<= 10 ms)':<31}{statistics.median(half_p99):>8.2f}  rounds: {each}")


def print_sustained(bench: Bench, base_rps: float) -> None:
    for name, runs in bench.drained.items():
        answered = sum(f.requests for f in bench.rows[name])
        took_s = sum(run_s + drain_s for run_s, drain_s in runs)
        drains = ", ".join(f"{drain_s:.1f}" for _, drain_s in runs)
        print(
            f"{name}: normalised {answered / took_s:.0f}/s over runs + drains (drains {drains} "
            f"s), {answered / took_s / base_rps:.2f} of the baseline"
        )


def print_notes(bench: Bench) -> None:
    rows = bench.rows
    half_rate = bench.half_rate
    if bench.wrk:
        print(
            f"max rates: wrk -t1, {CONNECTIONS} connections, closed loop; half rate "
            f"(about {half_rate:.0f}/s): wrk paced open loop, timed from each write, then once "
            f"the Python generator, timed from each due time; {DURATION_S:g} s runs"
        )
    else:
        print(
            f"the Python generator: max rates closed loop, {CONNECTIONS} connections; half rate "
            f"open loop at about {half_rate:.0f}/s, timed from each due time; {DURATION_S:g} s runs"
        )
    print("gen. cpu: the load generator's CPU time over the run's (cores; Python's start-up too)")
    copies = ", ".join(f"{s:.1f}" for s in bench.copy_s)
    print(f"each report run's `sent` targets copied in (s; between runs, not measured): {copies}")
    for name in (HALF, BASELINE_HALF):
        late = sum(f.late for f in rows[name])
        if late > sum(f.requests for f in rows[name]) / 100:
            bench.notes.append(
                f"{name}: {late} requests went out over 1 ms late (every connection busy); "
                "wrk times from the write, so its p99 understates: see the Python row"
            )
    every = [(name, f) for name, runs in rows.items() for f in runs]
    for name, f in [*every, *(("warm-up", w) for w in bench.warmups)]:
        if f.requests > f.prepared:
            bench.notes.append(f"{name}: {f.requests - f.prepared} requests reused an id")
        if f.non2xx or f.errors:
            bench.notes.append(f"{name}: {f.non2xx} non-2xx answers, {f.errors} socket errors")
    for note in bench.notes:
        print(f"note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Carrier-callback ingest benchmark.")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"runs of each kind (default {ROUNDS})"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # `bench` importable here and in the generator's process
    started = time.monotonic()
    wrk = None if args.loadgen == "python" else ensure_wrk()
    if wrk is None and args.loadgen == "wrk":
        raise SystemExit("wrk is not installed and could not be installed")
    if wrk is None and args.loadgen == "auto":
        print("wrk is not available: using the Python load generator", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        bench = Bench(wrk, Path(name))
        measure(bench, args.rounds)
        print_table(bench)
    print(f"took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
