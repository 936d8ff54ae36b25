"""The bulk fill bench/growth.py measures on: rows as gateway/store/tx.py writes them, put straight
into a file the gateway made (its schema, its migrations) with sqlite3 executemany.

Each message has one target, its carrier reference, the idempotency key of the callback that came
for it, and its `message_created` webhook event, delivered at the first attempt (which is logged).
Odd messages are inbound (`received`), even ones outbound and `delivered`; each 10th belongs to
one of the other customers, in turn. Another process (spawn) makes the rows while this one
inserts them: making them costs about as much as inserting them.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import multiprocessing
import random
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import msgspec

from bench.ingest import OWNED  # the big customer's number
from gateway import events
from gateway.clock import NEVER
from gateway.ids import new_message_id
from gateway.models import Address, Direction, EventType, Message, Target, TargetStatus
from gateway.signing import generate_webhook_secret

TEXT = "hello, this is test message. {i}"
CHUNK = 20_000  # messages per transaction
AHEAD = 2  # chunks made ahead of the inserts, at most

INSERTS = {
    "messages": "INSERT INTO messages (id, customer_id, direction, source, text, tm_create, "
    "tm_update, tm_delete) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "targets": "INSERT INTO targets (message_id, idx, destination, status, parts, tm_update, "
    "carrier, carrier_status, error_code, carrier_message_id, next_send_at, send_deadline_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "refs": "INSERT INTO carrier_refs (carrier, carrier_message_id, message_id, idx) "
    "VALUES (?, ?, ?, ?)",
    "callbacks": "INSERT INTO processed_callbacks (carrier, key, tm_create) VALUES (?, ?, ?)",
    "outbox": "INSERT INTO outbox (seq, event_id, customer_id, message_id, event_type, body, "
    "state, attempts, next_attempt_at, lease_until, tm_create, tm_update, last_error) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "attempts": "INSERT INTO webhook_attempts (outbox_seq, attempt_number, trigger, tm_attempt, "
    "url, status_code, duration_ms, error, response_excerpt, error_class) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}

_encoder = msgspec.json.Encoder()


@functools.lru_cache(maxsize=1024)
def _minute_text(epoch_minute: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:", time.gmtime(epoch_minute * 60))


def time_text(epoch_s: int, micros: int) -> str:
    """clock.format_time's text, without a datetime and a strftime per row."""
    return f"{_minute_text(epoch_s // 60)}{epoch_s % 60:02d}.{micros:06d}"


@dataclass(frozen=True)
class Owners:
    main: str
    others: tuple[str, ...]

    def of(self, i: int) -> str:
        return self.others[(i // 10) % len(self.others)] if i % 10 == 0 else self.main


@dataclass(frozen=True)
class Made:
    """One message: as created (its event's body), as stored now, and what its life left."""

    created: Message
    stored: Message
    carrier_message_id: str
    callback_key: str  # of the callback that came for it: the inbound SMS, or the final report
    send_deadline_at: str | None
    attempted: str  # when its webhook went out


def make_message(i: int, owner: str, start_s: int, rng: random.Random) -> Made:
    """The i-th message, created in the i-th second after `start_s`."""
    second = start_s + i
    micros = rng.randrange(900_000)
    created = time_text(second, micros)
    message_id = new_message_id((second * 1_000_000 + micros) * 1000)  # as the gateway numbers it
    done, attempted = time_text(second, 950_000), time_text(second, 970_000)
    key = uuid.uuid4()
    other = Address("tel", f"+1666{rng.randrange(10**7):07d}")
    text = TEXT.format(i=i)
    if i % 2:  # stored as created; the carrier's id is its callback's
        target = Target(
            Address("tel", OWNED), TargetStatus.RECEIVED, 1, created, "sandbox", "received"
        )
        inbound = Message(
            message_id, owner, "sms", other, (target,), text, Direction.INBOUND, created
        )
        return Made(inbound, inbound, f"sbx_in_{key.hex}", f"sbx_in_{key.hex}", None, attempted)
    target = Target(other, TargetStatus.QUEUED, 1, carrier="sandbox")
    source = Address("tel", OWNED)
    sent = Message(message_id, owner, "sms", source, (target,), text, Direction.OUTBOUND, created)
    delivered = Target(other, TargetStatus.DELIVERED, 1, done, "sandbox", "delivered")
    stored = msgspec.structs.replace(sent, targets=(delivered,), tm_update=done)
    deadline = time_text(second + 60, int(created[-6:]))
    return Made(sent, stored, f"sbx_{key.hex}", f"sbx_dlr_{key.hex}", deadline, attempted)


@dataclass
class Rows:
    """One chunk's rows, by table, in INSERTS' column order."""

    messages: list[tuple[Any, ...]] = field(default_factory=list)
    targets: list[tuple[Any, ...]] = field(default_factory=list)
    refs: list[tuple[Any, ...]] = field(default_factory=list)
    callbacks: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    attempts: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, seq: int, made: Made, webhook_uri: str) -> None:
        m, t, carrier_id = made.stored, made.stored.targets[0], made.carrier_message_id
        source = _encoder.encode(m.source).decode()
        destination = _encoder.encode(t.destination).decode()
        body = events.event_body(EventType.MESSAGE_CREATED, made.created)
        self.messages.append((
            m.id, m.customer_id, m.direction.value, source, m.text, m.tm_create, m.tm_update,
            m.tm_delete,
        ))  # fmt: skip
        self.targets.append((
            m.id, 0, destination, t.status.value, t.parts, t.tm_update, t.carrier,
            t.carrier_status, t.error_code, carrier_id, None, made.send_deadline_at,
        ))  # fmt: skip
        self.refs.append(("sandbox", carrier_id, m.id, 0))
        self.callbacks.append(("sandbox", made.callback_key, t.tm_update))
        self.outbox.append((
            seq, events.new_event_id(), m.customer_id, m.id, "message_created", body,
            "delivered", 1, NEVER, None, m.tm_create, made.attempted, "",
        ))  # fmt: skip
        self.attempts.append(
            (seq, 1, "scheduled", made.attempted, webhook_uri, 200, 1.2, "", "", "")
        )


@dataclass(frozen=True)
class Job:
    """Messages first .. first + count - 1 of a fill."""

    first: int
    count: int
    owners: Owners
    start_s: int  # when message 0 was created (Unix seconds)
    webhook_uri: str


def make_rows(job: Job) -> Rows:
    rng = random.Random(job.first)
    rows = Rows()
    for i in range(job.first, job.first + job.count):
        rows.add(i + 1, make_message(i, job.owners.of(i), job.start_s, rng), job.webhook_uri)
    return rows


def made_ahead(jobs: list[Job]) -> Iterator[Rows]:
    """Each job's rows, in order, made in another process at most AHEAD jobs in advance."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        waiting: collections.deque[AsyncResult[Rows]] = collections.deque()
        for job in jobs:
            waiting.append(pool.apply_async(make_rows, (job,)))
            if len(waiting) > AHEAD:
                yield waiting.popleft().get()
        while waiting:
            yield waiting.popleft().get()


def add_customers(database: Path, count: int, webhook_uri: str, now: str) -> tuple[str, ...]:
    """`count` more customers, as `gateway customers create` makes them; their ids."""
    ids = tuple(str(uuid.uuid4()) for _ in range(count))
    rows = [
        (id_, f"other-{n}", webhook_uri, generate_webhook_secret(), now)
        for n, id_ in enumerate(ids)
    ]
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.executemany(
            "INSERT INTO customers (id, name, webhook_uri, webhook_method, webhook_secret, "
            "tm_create) VALUES (?, ?, ?, 'POST', ?, ?)",
            rows,
        )  # fmt: skip
    return ids


def fill(database: Path, count: int, owners: Owners, webhook_uri: str) -> None:
    """`count` messages, created one a second up to a minute ago, and what they left behind."""
    start_s = int(time.time()) - count - 60
    jobs = [
        Job(first, min(CHUNK, count - first), owners, start_s, webhook_uri)
        for first in range(0, count, CHUNK)
    ]
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        # Not how the gateway writes (WAL, FULL sync): only how this file gets filled quickly.
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB: the random-key indexes stay cached
        for rows in made_ahead(jobs):
            db.execute("BEGIN")
            for table, sql in INSERTS.items():
                db.executemany(sql, getattr(rows, table))
            db.execute("COMMIT")
        db.execute("PRAGMA journal_mode=WAL")  # as the gateway leaves it


def make_pending(database: Path, now: str) -> None:
    """Every webhook event pending again, due `now`."""
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-1000000")
        db.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, tm_update = ?",
            (now, now),
        )
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
