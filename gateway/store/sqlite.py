"""Every SQL statement: the SQLite store (WAL, versioned migrations, one writer connection).

The interface speaks domain words (messages, targets, outbox events) so a PostgreSQL store can be
written beside it with the same methods. Writes happen inside `transaction()`, whose `Tx` commits
everything a change causes - the message, its outbox events, idempotency keys - at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from gateway.clock import NEVER
from gateway.errors import OwnershipConflict, StoreError
from gateway.models import (
    Address,
    Customer,
    Direction,
    EventType,
    Message,
    Number,
    Target,
    TargetStatus,
    WebhookEvent,
)
from gateway.store.schema import MIGRATIONS

_address_decoder = msgspec.json.Decoder(Address)
_encoder = msgspec.json.Encoder()


class TargetRef(msgspec.Struct, frozen=True):
    message_id: str
    idx: int


class DispatchJob(msgspec.Struct, frozen=True):
    """A queued target claimed for submission to its carrier."""

    message_id: str
    idx: int
    carrier: str
    source: str
    destination: str
    text: str
    send_deadline_at: str
    send_attempts: int


class OutboxEvent(msgspec.Struct, frozen=True):
    """A customer webhook event claimed for one delivery attempt."""

    seq: int
    event_id: str
    customer_id: str
    message_id: str
    event_type: str
    body: bytes
    attempts: int
    trigger: str


class Attempt(msgspec.Struct, frozen=True):
    """One delivery attempt, as recorded in the attempt log."""

    outbox_seq: int
    attempt_number: int
    trigger: str
    tm_attempt: str
    url: str
    status_code: int
    duration_ms: float
    error: str
    response_excerpt: str


class PendingReport(msgspec.Struct, frozen=True):
    """A delivery report that arrived before the send that it reports was recorded."""

    status: str
    carrier_status: str
    error_code: str
    parts: int


class Store:
    """The SQLite store. Open with `Store.open(path)`; close with `close()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # One connection serves the whole process: the lock keeps transactions from interleaving.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        db_path = Path(path)
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(db_path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the gateway answers 2xx, even across power loss.
            await conn.execute("PRAGMA synchronous=FULL")
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.execute("PRAGMA foreign_keys=ON")
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open database {db_path}: {exc}") from exc
        store = cls(conn)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._conn.close()

    async def _migrate(self) -> None:
        async with self.transaction() as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = await tx.one("SELECT MAX(version) AS v FROM schema_version")
            current = row["v"] if row and row["v"] is not None else 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in script.split(";"):
                        if statement.strip():
                            await tx.execute(statement)
                    await tx.execute("INSERT INTO schema_version VALUES (?)", (version,))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """BEGIN IMMEDIATE ... COMMIT; rolls back when the body raises."""
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
            except (sqlite3.Error, ValueError) as exc:
                raise StoreError(f"database unavailable: {exc}") from exc
            try:
                yield Tx(self._conn)
            except BaseException:
                await self._rollback()
                raise
            try:
                await self._conn.execute("COMMIT")
            except (sqlite3.Error, ValueError) as exc:
                await self._rollback()
                raise StoreError(f"commit failed: {exc}") from exc

    async def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (disk full, I/O error).
        with contextlib.suppress(sqlite3.Error, ValueError):
            if self._conn.in_transaction:
                await self._conn.execute("ROLLBACK")

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Tx]:
        """Reads under the lock, so they never see another coroutine's uncommitted writes."""
        async with self._lock:
            yield Tx(self._conn)

    async def release_leases(self) -> None:
        """Free the work a crashed process held. One gateway process serves a SQLite file, so
        every lease found at start-up belongs to a process that is gone."""
        async with self.transaction() as tx:
            await tx.execute("UPDATE targets SET lease_until = NULL WHERE lease_until IS NOT NULL")
            await tx.execute("UPDATE outbox SET lease_until = NULL WHERE lease_until IS NOT NULL")

    async def ping(self) -> None:
        async with self.reading() as tx:
            # Reads the file, so a database that went away is noticed (SELECT 1 would not).
            await tx.one("SELECT version FROM schema_version LIMIT 1")

    # Customers, numbers, access keys -------------------------------------------------------

    async def create_customer(self, customer: Customer) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO customers (id, name, webhook_uri, webhook_method, webhook_secret, "
                "tm_create) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    customer.id,
                    customer.name,
                    customer.webhook_uri,
                    customer.webhook_method,
                    customer.webhook_secret,
                    customer.tm_create,
                ),
            )

    async def list_customers(self) -> list[Customer]:
        async with self.reading() as tx:
            rows = await tx.all("SELECT * FROM customers ORDER BY tm_create, id")
        return [_customer(row) for row in rows]

    async def get_customer(self, customer_id: str) -> Customer | None:
        async with self.reading() as tx:
            return await tx.get_customer(customer_id)

    async def add_number(self, number: Number) -> None:
        async with self.transaction() as tx:
            row = await tx.one("SELECT customer_id FROM numbers WHERE number = ?", (number.number,))
            if row and row["customer_id"] != number.customer_id:
                raise OwnershipConflict(f"{number.number} is owned by another customer")
            await tx.execute(
                "INSERT INTO numbers (number, customer_id, carrier, active, tm_create) "
                "VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT (number) DO UPDATE SET carrier = excluded.carrier",
                (number.number, number.customer_id, number.carrier, number.tm_create),
            )

    async def get_number(self, number: str) -> Number | None:
        async with self.reading() as tx:
            return await tx.get_number(number)

    async def add_access_key(self, key_hash: str, customer_id: str, tm_create: str) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO access_keys (key_hash, customer_id, tm_create) VALUES (?, ?, ?)",
                (key_hash, customer_id, tm_create),
            )

    async def customer_for_access_key(self, key_hash: str) -> str | None:
        async with self.reading() as tx:
            row = await tx.one(
                "SELECT customer_id FROM access_keys WHERE key_hash = ?", (key_hash,)
            )
        return str(row["customer_id"]) if row else None

    # Messages -------------------------------------------------------------------------------

    async def get_message(self, message_id: str) -> Message | None:
        async with self.reading() as tx:
            return await tx.get_message(message_id)

    async def list_messages(
        self, customer_id: str, limit: int, before: tuple[str, str | None] | None
    ) -> list[Message]:
        """Newest first; `before` is (tm_create, id) of the last message seen, id None for any."""
        sql = "SELECT * FROM messages WHERE customer_id = ? AND tm_delete = ?"
        params: list[Any] = [customer_id, NEVER]
        if before is not None and before[1] is not None:
            sql += " AND (tm_create, id) < (?, ?)"
            params += [before[0], before[1]]
        elif before is not None:
            sql += " AND tm_create < ?"
            params.append(before[0])
        sql += " ORDER BY tm_create DESC, id DESC LIMIT ?"
        params.append(limit)
        async with self.reading() as tx:
            rows = await tx.all(sql, params)
            return await tx.assemble(rows)

    # Outbound dispatch -----------------------------------------------------------------------

    async def claim_due_targets(self, now: str, lease_until: str, limit: int) -> list[DispatchJob]:
        """Queued targets whose time has come and that no live worker holds; leases them."""
        async with self.transaction() as tx:
            rows = await tx.all(
                "SELECT t.message_id, t.idx, t.carrier, t.destination, t.send_deadline_at, "
                "t.send_attempts, m.source, m.text FROM targets t JOIN messages m "
                "ON m.id = t.message_id WHERE t.next_send_at <= ? "
                "AND (t.lease_until IS NULL OR t.lease_until <= ?) ORDER BY t.next_send_at LIMIT ?",
                (now, now, limit),
            )
            await tx.executemany(
                "UPDATE targets SET lease_until = ? WHERE message_id = ? AND idx = ?",
                [(lease_until, row["message_id"], row["idx"]) for row in rows],
            )
        return [_dispatch_job(row) for row in rows]

    # Webhook outbox --------------------------------------------------------------------------

    async def claim_due_events(self, now: str, lease_until: str, limit: int) -> list[OutboxEvent]:
        """The oldest pending event of each message, when due; later events wait behind it."""
        async with self.transaction() as tx:
            rows = await tx.all(
                "SELECT o.* FROM outbox o WHERE o.state = 'pending' AND o.next_attempt_at <= ? "
                "AND (o.lease_until IS NULL OR o.lease_until <= ?) "
                "AND o.seq = (SELECT MIN(p.seq) FROM outbox p WHERE p.message_id = o.message_id "
                "AND p.state = 'pending') ORDER BY o.next_attempt_at, o.seq LIMIT ?",
                (now, now, limit),
            )
            await tx.executemany(
                "UPDATE outbox SET lease_until = ? WHERE seq = ?",
                [(lease_until, row["seq"]) for row in rows],
            )
        return [_outbox_event(row) for row in rows]

    async def finish_attempt(
        self, attempt: Attempt, state: str, next_attempt_at: str | None
    ) -> None:
        """Record one attempt and the event's new state (pending with a next time, or final)."""
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO webhook_attempts (outbox_seq, attempt_number, trigger, tm_attempt, "
                "url, status_code, duration_ms, error, response_excerpt) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.outbox_seq,
                    attempt.attempt_number,
                    attempt.trigger,
                    attempt.tm_attempt,
                    attempt.url,
                    attempt.status_code,
                    attempt.duration_ms,
                    attempt.error,
                    attempt.response_excerpt,
                ),
            )
            await tx.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt_at = ?, "
                "lease_until = NULL, last_error = ?, tm_update = ? WHERE seq = ?",
                (
                    state,
                    next_attempt_at or NEVER,
                    attempt.error,
                    attempt.tm_attempt,
                    attempt.outbox_seq,
                ),
            )

    async def requeue_message_events(self, message_id: str, now: str) -> int:
        """Queue every event of a message again (manual resend); the webhook-ids stay."""
        async with self.transaction() as tx:
            cursor = await tx.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, trigger = 'manual', "
                "tm_update = ? WHERE message_id = ?",
                (now, now, message_id),
            )
            return cursor.rowcount

    async def list_attempts(self, event_id: str) -> list[Attempt]:
        async with self.reading() as tx:
            rows = await tx.all(
                "SELECT a.* FROM webhook_attempts a JOIN outbox o ON o.seq = a.outbox_seq "
                "WHERE o.event_id = ? ORDER BY a.id",
                (event_id,),
            )
        return [msgspec.convert(dict(row), Attempt) for row in rows]

    async def outbox_states(self, message_id: str) -> list[tuple[str, str, int]]:
        """(event type, state, attempts) of a message's events, oldest first."""
        async with self.reading() as tx:
            rows = await tx.all(
                "SELECT event_type, state, attempts FROM outbox WHERE message_id = ? ORDER BY seq",
                (message_id,),
            )
        return [(row["event_type"], row["state"], row["attempts"]) for row in rows]

    async def count_backlog(self) -> dict[str, int]:
        async with self.reading() as tx:
            events = await tx.one("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
            targets = await tx.one(
                "SELECT COUNT(*) AS n FROM targets WHERE next_send_at IS NOT NULL"
            )
            unrouted = await tx.one("SELECT COUNT(*) AS n FROM unrouted_inbound")
        return {
            "webhook_events_pending": int(events["n"]) if events else 0,
            "targets_queued": int(targets["n"]) if targets else 0,
            "inbound_unrouted": int(unrouted["n"]) if unrouted else 0,
        }


class Tx:
    """Statements inside one transaction (or one locked read)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Cursor:
        try:
            return await self._conn.execute(sql, params)
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, params)
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        cursor = await self.execute(sql, params)
        row: sqlite3.Row | None = await cursor.fetchone()
        return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        cursor = await self.execute(sql, params)
        return list(await cursor.fetchall())

    # Reads ------------------------------------------------------------------------------------

    async def get_customer(self, customer_id: str) -> Customer | None:
        row = await self.one("SELECT * FROM customers WHERE id = ?", (customer_id,))
        return _customer(row) if row else None

    async def get_number(self, number: str) -> Number | None:
        row = await self.one(
            "SELECT number, customer_id, carrier, tm_create FROM numbers "
            "WHERE number = ? AND active = 1",
            (number,),
        )
        return msgspec.convert(dict(row), Number) if row else None

    async def get_message(self, message_id: str) -> Message | None:
        row = await self.one("SELECT * FROM messages WHERE id = ?", (message_id,))
        if row is None:
            return None
        return (await self.assemble([row]))[0]

    async def assemble(self, rows: list[sqlite3.Row]) -> list[Message]:
        """Messages from their rows plus all their targets, in one query."""
        if not rows:
            return []
        ids = [row["id"] for row in rows]
        marks = ",".join("?" * len(ids))
        target_rows = await self.all(
            f"SELECT * FROM targets WHERE message_id IN ({marks}) ORDER BY message_id, idx",  # noqa: S608
            ids,
        )
        targets: dict[str, list[Target]] = {message_id: [] for message_id in ids}
        for target_row in target_rows:
            targets[target_row["message_id"]].append(_target(target_row))
        return [_message(row, targets[row["id"]]) for row in rows]

    async def find_target(self, carrier: str, carrier_message_id: str) -> TargetRef | None:
        row = await self.one(
            "SELECT message_id, idx FROM carrier_refs WHERE carrier = ? AND carrier_message_id = ?",
            (carrier, carrier_message_id),
        )
        return TargetRef(row["message_id"], row["idx"]) if row else None

    async def get_target(self, ref: TargetRef) -> Target | None:
        row = await self.one(
            "SELECT * FROM targets WHERE message_id = ? AND idx = ?", (ref.message_id, ref.idx)
        )
        return _target(row) if row else None

    # Writes -----------------------------------------------------------------------------------

    async def insert_message(
        self, message: Message, next_send_at: str | None, send_deadline_at: str | None
    ) -> None:
        await self.execute(
            "INSERT INTO messages (id, customer_id, direction, source, text, tm_create, tm_update, "
            "tm_delete) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.id,
                message.customer_id,
                message.direction.value,
                _encoder.encode(message.source).decode(),
                message.text,
                message.tm_create,
                message.tm_update,
                message.tm_delete,
            ),
        )
        await self.executemany(
            "INSERT INTO targets (message_id, idx, destination, status, parts, tm_update, carrier, "
            "next_send_at, send_deadline_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    message.id,
                    idx,
                    _encoder.encode(t.destination).decode(),
                    t.status.value,
                    t.parts,
                    t.tm_update,
                    t.carrier,
                    next_send_at,
                    send_deadline_at,
                )
                for idx, t in enumerate(message.targets)
            ],
        )

    async def update_target(self, ref: TargetRef, target: Target, *, dispatch_done: bool) -> None:
        """Write a target's status fields; `dispatch_done` takes it off the send queue."""
        sql = (
            "UPDATE targets SET status = ?, parts = ?, tm_update = ?, carrier_status = ?, "
            "error_code = ?"
        )
        if dispatch_done:
            sql += ", next_send_at = NULL, lease_until = NULL"
        await self.execute(
            sql + " WHERE message_id = ? AND idx = ?",
            (
                target.status.value,
                target.parts,
                target.tm_update,
                target.carrier_status,
                target.error_code,
                ref.message_id,
                ref.idx,
            ),
        )
        await self.execute(
            "UPDATE messages SET tm_update = ? WHERE id = ?", (target.tm_update, ref.message_id)
        )

    async def clear_dispatch(self, ref: TargetRef) -> None:
        await self.execute(
            "UPDATE targets SET next_send_at = NULL, lease_until = NULL "
            "WHERE message_id = ? AND idx = ?",
            (ref.message_id, ref.idx),
        )

    async def schedule_send(self, ref: TargetRef, next_send_at: str, attempts: int) -> None:
        await self.execute(
            "UPDATE targets SET next_send_at = ?, send_attempts = ?, lease_until = NULL "
            "WHERE message_id = ? AND idx = ?",
            (next_send_at, attempts, ref.message_id, ref.idx),
        )

    async def add_carrier_ref(self, carrier: str, carrier_message_id: str, ref: TargetRef) -> None:
        await self.execute(
            "INSERT OR IGNORE INTO carrier_refs (carrier, carrier_message_id, message_id, idx) "
            "VALUES (?, ?, ?, ?)",
            (carrier, carrier_message_id, ref.message_id, ref.idx),
        )
        await self.execute(
            "UPDATE targets SET carrier_message_id = ? WHERE message_id = ? AND idx = ?",
            (carrier_message_id, ref.message_id, ref.idx),
        )

    async def mark_deleted(self, message_id: str, now: str) -> None:
        await self.execute(
            "UPDATE messages SET tm_update = ?, tm_delete = ? WHERE id = ?", (now, now, message_id)
        )

    async def remember_callback(self, carrier: str, key: str, now: str) -> bool:
        """True the first time a carrier's idempotency key is seen; False for a duplicate."""
        cursor = await self.execute(
            "INSERT OR IGNORE INTO processed_callbacks (carrier, key, tm_create) VALUES (?, ?, ?)",
            (carrier, key, now),
        )
        return cursor.rowcount == 1

    async def add_pending_report(
        self, carrier: str, carrier_message_id: str, report: PendingReport, now: str
    ) -> None:
        await self.execute(
            "INSERT INTO pending_reports (carrier, carrier_message_id, status, carrier_status, "
            "error_code, parts, tm_create) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                carrier,
                carrier_message_id,
                report.status,
                report.carrier_status,
                report.error_code,
                report.parts,
                now,
            ),
        )

    async def take_pending_reports(
        self, carrier: str, carrier_message_id: str
    ) -> list[PendingReport]:
        rows = await self.all(
            "DELETE FROM pending_reports WHERE carrier = ? AND carrier_message_id = ? "
            "RETURNING status, carrier_status, error_code, parts",
            (carrier, carrier_message_id),
        )
        return [msgspec.convert(dict(row), PendingReport) for row in rows]

    async def add_unrouted(
        self,
        carrier: str,
        source: str,
        destination: str,
        text: str,
        carrier_message_id: str,
        now: str,
    ) -> None:
        await self.execute(
            "INSERT INTO unrouted_inbound (carrier, carrier_message_id, source, destination, text, "
            "tm_create) VALUES (?, ?, ?, ?, ?, ?)",
            (carrier, carrier_message_id, source, destination, text, now),
        )

    async def claim_idempotency_key(
        self, customer_id: str, key: str, body_hash: str, message_id: str, now: str
    ) -> tuple[str, str] | None:
        """None when the key is new (now taken); else the (body_hash, message_id) it holds."""
        row = await self.one(
            "SELECT body_hash, message_id FROM idempotency_keys WHERE customer_id = ? AND key = ?",
            (customer_id, key),
        )
        if row:
            return str(row["body_hash"]), str(row["message_id"])
        await self.execute(
            "INSERT INTO idempotency_keys (customer_id, key, body_hash, message_id, tm_create) "
            "VALUES (?, ?, ?, ?, ?)",
            (customer_id, key, body_hash, message_id, now),
        )
        return None

    async def add_event(
        self, event_id: str, event_type: EventType, message: Message, now: str
    ) -> None:
        body = _encoder.encode(WebhookEvent(type=event_type, data=message))
        await self.execute(
            "INSERT INTO outbox (event_id, customer_id, message_id, event_type, body, state, "
            "attempts, next_attempt_at, trigger, tm_create, tm_update, last_error) "
            "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, 'scheduled', ?, ?, '')",
            (event_id, message.customer_id, message.id, event_type.value, body, now, now, now),
        )


def _customer(row: sqlite3.Row) -> Customer:
    return msgspec.convert(dict(row), Customer)


def _target(row: sqlite3.Row) -> Target:
    return Target(
        destination=_address_decoder.decode(row["destination"]),
        status=TargetStatus(row["status"]),
        parts=row["parts"],
        tm_update=row["tm_update"],
        carrier=row["carrier"],
        carrier_status=row["carrier_status"],
        error_code=row["error_code"],
    )


def _message(row: sqlite3.Row, targets: list[Target]) -> Message:
    return Message(
        id=row["id"],
        customer_id=row["customer_id"],
        type="sms",
        source=_address_decoder.decode(row["source"]),
        targets=tuple(targets),
        text=row["text"],
        direction=Direction(row["direction"]),
        tm_create=row["tm_create"],
        tm_update=row["tm_update"],
        tm_delete=row["tm_delete"],
    )


def _dispatch_job(row: sqlite3.Row) -> DispatchJob:
    return DispatchJob(
        message_id=row["message_id"],
        idx=row["idx"],
        carrier=row["carrier"],
        source=_address_decoder.decode(row["source"]).target,
        destination=_address_decoder.decode(row["destination"]).target,
        text=row["text"],
        send_deadline_at=row["send_deadline_at"],
        send_attempts=row["send_attempts"],
    )


def _outbox_event(row: sqlite3.Row) -> OutboxEvent:
    return OutboxEvent(
        seq=row["seq"],
        event_id=row["event_id"],
        customer_id=row["customer_id"],
        message_id=row["message_id"],
        event_type=row["event_type"],
        body=bytes(row["body"]),
        attempts=row["attempts"],
        trigger=row["trigger"],
    )
