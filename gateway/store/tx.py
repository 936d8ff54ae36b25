"""Statements inside one transaction (or one locked read): the store's unit of work."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec

from gateway.clock import NEVER
from gateway.errors import StoreError
from gateway.models import Customer, EventType, Message, Number, Target
from gateway.store import bulk
from gateway.store.records import (
    AttemptOutcome,
    EndpointHealth,
    InboundKey,
    InboundPart,
    PendingReport,
    TargetRef,
    customer_from,
    message_from,
    target_from,
)

_encoder = msgspec.json.Encoder()

_LOG_ATTEMPTS = (
    "INSERT INTO webhook_attempts (outbox_seq, attempt_number, trigger, tm_attempt, url, "
    "status_code, duration_ms, error, response_excerpt, error_class) VALUES"
)
# Delivered attempts as one JSON list of [seq, requeues as claimed, attempt time]. The list is
# a subquery, not a WITH: Python 3.11's sqlite3 reports no rowcount for a statement that starts
# with WITH.
_DONE = (
    "(SELECT json_extract(value, '$[0]') AS seq, json_extract(value, '$[1]') AS requeues, "
    "json_extract(value, '$[2]') AS tm FROM json_each(?)) AS d"
)
_DELIVERED = (
    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, next_attempt_at = ?, "  # noqa: S608 - fixed fragments
    "lease_until = NULL, last_error = '', tm_update = d.tm, trigger = 'scheduled' "
    f"FROM {_DONE} WHERE outbox.seq = d.seq AND outbox.requeues = d.requeues"
)
_REQUEUED = (
    f"SELECT d.seq, d.tm FROM {_DONE} JOIN outbox o ON o.seq = d.seq "  # noqa: S608 - fixed fragments
    "WHERE o.requeues != d.requeues"
)
# Requeued (resend, recover) while in flight: the attempt counts, the requeue stands, and the
# event goes out again.
_ATTEMPTED_REQUEUED = (
    "UPDATE outbox SET attempts = attempts + 1, lease_until = NULL, last_error = ?, "
    "tm_update = ? WHERE seq = ?"
)
_HEALTHY = (  # a healthy endpoint's row is left unwritten
    "UPDATE customers SET webhook_failing_since = '' "
    "WHERE id IN (SELECT value FROM json_each(?)) AND webhook_failing_since != ''"
)


T = TypeVar("T")


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...


class Connection(Protocol):
    """What a Tx needs of its connection: aiosqlite's (one thread hop per statement) or
    `InThread` (statements run directly, inside the database thread)."""

    async def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Any: ...

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...


class InThread:
    """A sqlite3 connection behind the async Connection interface, for units of work that run
    whole inside the database thread: its coroutines never suspend, so `drive` completes them
    without an event loop, and a unit of many statements costs one hop instead of one each."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, parameters)

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self._conn.executemany(sql, parameters)

    async def execute_fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, parameters).fetchall()


def database_failed(exc: BaseException) -> bool:
    """True when a StoreError means the database did not work (busy, full, I/O, corrupt), not
    that one statement's data was refused (a constraint, an integer too large)."""
    if not isinstance(exc, StoreError):
        return False
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) or type(cause) in (
        sqlite3.DatabaseError, sqlite3.InternalError,
    )  # fmt: skip


class UnitFailed(Exception):
    """A unit of work run without a savepoint raised: undo the transaction, run it again with
    savepoints (so that unit alone is set aside)."""


class Tx:
    """Statements inside one transaction (or one locked read)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            cursor: Cursor = await self._conn.execute(sql, params)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            raise StoreError(f"database error: {exc}") from exc
        return cursor

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, params)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        # One statement, rows fetched with it (execute, then fetch, would be two trips).
        try:
            rows = await self._conn.execute_fetchall(sql, params)
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            raise StoreError(f"database error: {exc}") from exc
        return list(rows)

    # Reads ------------------------------------------------------------------------------------

    async def get_customer(self, customer_id: str) -> Customer | None:
        row = await self.one("SELECT * FROM customers WHERE id = ?", (customer_id,))
        return customer_from(row) if row else None

    async def has_webhook(self, customer_id: str) -> bool:
        row = await self.one("SELECT webhook_uri FROM customers WHERE id = ?", (customer_id,))
        return row is not None and bool(row["webhook_uri"])

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
            targets[target_row["message_id"]].append(target_from(target_row))
        return [message_from(row, targets[row["id"]]) for row in rows]

    async def find_target(self, carrier: str, carrier_message_id: str) -> TargetRef | None:
        row = await self.one(
            "SELECT message_id, idx FROM carrier_refs WHERE carrier = ? AND carrier_message_id = ?",
            (carrier, carrier_message_id),
        )
        return TargetRef(row["message_id"], row["idx"]) if row else None

    # Writes -----------------------------------------------------------------------------------

    async def insert_message(
        self,
        message: Message,
        next_send_at: str | None,
        send_deadline_at: str | None,
        carrier_message_id: str = "",
    ) -> None:
        """The message and its targets; `carrier_message_id` is each target's (an inbound SMS's
        id at its carrier: one statement fewer than a separate add_carrier_ref)."""
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
            "carrier_status, error_code, carrier_message_id, next_send_at, send_deadline_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    message.id,
                    idx,
                    _encoder.encode(t.destination).decode(),
                    t.status.value,
                    t.parts,
                    t.tm_update,
                    t.carrier,
                    t.carrier_status,
                    t.error_code,
                    carrier_message_id,
                    next_send_at,
                    send_deadline_at,
                )
                for idx, t in enumerate(message.targets)
            ],
        )

    async def update_target(
        self,
        ref: TargetRef,
        target: Target,
        *,
        dispatch_done: bool,
        dlr_deadline_at: str | None = None,
    ) -> None:
        """Write a target's status fields; `dispatch_done` takes it off the send queue, and
        `dlr_deadline_at` is when a missing final report makes it dlr_timeout (None: never)."""
        sql = (
            "UPDATE targets SET status = ?, parts = ?, tm_update = ?, carrier_status = ?, "
            "error_code = ?, dlr_deadline_at = ?"
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
                dlr_deadline_at,
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

    async def clear_dlr_deadline(self, ref: TargetRef) -> None:
        await self.execute(
            "UPDATE targets SET dlr_deadline_at = NULL WHERE message_id = ? AND idx = ?",
            (ref.message_id, ref.idx),
        )

    async def schedule_send(self, ref: TargetRef, next_send_at: str, attempts: int) -> None:
        await self.execute(
            "UPDATE targets SET next_send_at = ?, send_attempts = ?, lease_until = NULL "
            "WHERE message_id = ? AND idx = ?",
            (next_send_at, attempts, ref.message_id, ref.idx),
        )

    async def add_carrier_ref(self, carrier: str, carrier_message_id: str, ref: TargetRef) -> None:
        """The carrier's id for a target: found by find_target, and written on the target."""
        await self.index_carrier_ref(carrier, carrier_message_id, ref)
        await self.execute(
            "UPDATE targets SET carrier_message_id = ? WHERE message_id = ? AND idx = ?",
            (carrier_message_id, ref.message_id, ref.idx),
        )

    async def index_carrier_ref(
        self, carrier: str, carrier_message_id: str, ref: TargetRef
    ) -> None:
        """Only what find_target reads (the target has the id already: insert_message)."""
        await self.execute(
            "INSERT OR IGNORE INTO carrier_refs (carrier, carrier_message_id, message_id, idx) "
            "VALUES (?, ?, ?, ?)",
            (carrier, carrier_message_id, ref.message_id, ref.idx),
        )

    async def add_target_parts(self, carrier: str, part_ids: Sequence[str], ref: TargetRef) -> None:
        """The ids of a target's parts, each reported on separately; all start `sent`."""
        await self.executemany(
            "INSERT OR IGNORE INTO target_parts (carrier, carrier_message_id, message_id, idx, "
            "status) VALUES (?, ?, ?, ?, 'sent')",
            [(carrier, part_id, ref.message_id, ref.idx) for part_id in part_ids],
        )

    async def set_part_status(self, carrier: str, part_id: str, status: str) -> list[str] | None:
        """Record one part's status; the statuses of all the target's parts, or None when the
        id is not a part of a multi-part target."""
        row = await self.one(
            "UPDATE target_parts SET status = ? WHERE carrier = ? AND carrier_message_id = ? "
            "RETURNING message_id, idx",
            (status, carrier, part_id),
        )
        if row is None:
            return None
        rows = await self.all(
            "SELECT status FROM target_parts WHERE message_id = ? AND idx = ?",
            (row["message_id"], row["idx"]),
        )
        return [str(r["status"]) for r in rows]

    async def part_status(self, carrier: str, part_id: str) -> str | None:
        row = await self.one(
            "SELECT status FROM target_parts WHERE carrier = ? AND carrier_message_id = ?",
            (carrier, part_id),
        )
        return str(row["status"]) if row else None

    async def add_inbound_part(self, part: InboundPart) -> int:
        """Keep one part of a concatenated inbound SMS; how many of its parts are here now."""
        await self.execute(
            "INSERT OR IGNORE INTO inbound_parts (carrier, source, destination, concat_ref, part, "
            "total, text, carrier_message_id, tm_create) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (part.carrier, part.source, part.destination, part.concat_ref, part.part, part.total,
             part.text, part.carrier_message_id, part.tm_create),
        )  # fmt: skip
        row = await self.one(
            "SELECT COUNT(*) AS n FROM inbound_parts WHERE carrier = ? AND source = ? "
            "AND destination = ? AND concat_ref = ?",
            (part.carrier, part.source, part.destination, part.concat_ref),
        )
        return int(row["n"]) if row else 0

    async def take_inbound_parts(self, key: InboundKey) -> list[InboundPart]:
        """Remove and return the parts of one inbound SMS, in part order."""
        rows = await self.all(
            "DELETE FROM inbound_parts WHERE carrier = ? AND source = ? AND destination = ? "
            "AND concat_ref = ? RETURNING *",
            (key.carrier, key.source, key.destination, key.concat_ref),
        )
        parts = [msgspec.convert(dict(row), InboundPart) for row in rows]
        return sorted(parts, key=lambda part: part.part)

    async def finish_attempts(self, outcomes: Sequence[AttemptOutcome]) -> None:
        """Attempts into the log, and their events' states after them. The usual batch, each
        attempt delivered to a healthy endpoint, takes a few statements whatever its size (see
        bulk); any other goes one attempt at a time, in order (a failure's health must not
        overtake a success's)."""
        if not _all_plainly_delivered(outcomes):
            for outcome in outcomes:
                await self.finish_attempt(outcome)
            return
        healthy = {o.health.customer_id for o in outcomes if o.health is not None}
        if healthy:
            await self.execute(_HEALTHY, (bulk.json_list(sorted(healthy)),))
        for sql, parameters in bulk.inserts(_LOG_ATTEMPTS, [_attempt_row(o) for o in outcomes]):
            await self.execute(sql, parameters)
        done = bulk.json_list(
            [(o.attempt.outbox_seq, o.requeues, o.attempt.tm_attempt) for o in outcomes]
        )
        cursor = await self.execute(_DELIVERED, (NEVER, done))
        if cursor.rowcount < len(outcomes):
            # Requeued (resend, recover) while in flight: as in finish_attempt.
            for row in await self.all(_REQUEUED, (done,)):
                await self.execute(_ATTEMPTED_REQUEUED, ("", row["tm"], row["seq"]))

    async def finish_attempt(self, outcome: AttemptOutcome) -> None:
        """One attempt into the log, and the event's state after it."""
        attempt = outcome.attempt
        if outcome.health is not None:
            await self.record_endpoint_health(outcome.health)
        [(sql, parameters)] = bulk.inserts(_LOG_ATTEMPTS, [_attempt_row(outcome)])
        await self.execute(sql, parameters)
        cursor = await self.execute(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt_at = ?, "
            "lease_until = NULL, last_error = ?, tm_update = ?, trigger = 'scheduled' "
            "WHERE seq = ? AND requeues = ?",
            (
                outcome.state,
                outcome.next_attempt_at or NEVER,
                attempt.error,
                attempt.tm_attempt,
                attempt.outbox_seq,
                outcome.requeues,
            ),
        )
        if cursor.rowcount and outcome.state == "pending" and outcome.next_attempt_at:
            # The message's later events wait for this one: due no sooner than it, so "due"
            # keeps meaning "may go now" and a claim never picks events that must wait.
            await self.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE message_id = "
                "(SELECT message_id FROM outbox WHERE seq = ?) AND state = 'pending' "
                "AND seq > ? AND next_attempt_at < ?",
                (outcome.next_attempt_at, attempt.outbox_seq, attempt.outbox_seq,
                 outcome.next_attempt_at),
            )  # fmt: skip
        if cursor.rowcount == 0:
            # Requeued (resend, recover) while in flight: the attempt counts, the requeue
            # stands, and the event goes out again.
            await self.execute(
                _ATTEMPTED_REQUEUED, (attempt.error, attempt.tm_attempt, attempt.outbox_seq)
            )

    async def record_endpoint_health(self, health: EndpointHealth) -> None:
        """A success ends a run of failures; a failure starts one; a reason disables."""
        if health.succeeded:
            await self.execute(_HEALTHY, (bulk.json_list([health.customer_id]),))
            return
        await self.execute(
            "UPDATE customers SET webhook_failing_since = ? "
            "WHERE id = ? AND webhook_failing_since = ''",
            (health.at, health.customer_id),
        )
        if not health.disable_reason:
            return
        sql = (
            "UPDATE customers SET webhook_disabled_at = ?, webhook_disabled_reason = ? WHERE id = ?"
        )
        params: list[str] = [health.at, health.disable_reason, health.customer_id]
        if health.failing_before:
            sql += " AND webhook_failing_since != '' AND webhook_failing_since <= ?"
            params.append(health.failing_before)
        await self.execute(sql, params)

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

    async def undoable(
        self, work: Callable[[Tx], Awaitable[T]], savepoint: bool = True
    ) -> T | Exception:
        """Run `work` in a savepoint. If it raises, its writes alone are undone and the exception
        is returned; except when the database itself failed (busy, full, I/O, corrupt): then the
        whole transaction must go, to be tried again later. Without a savepoint (two statements
        fewer, for work that rarely fails) a failure raises UnitFailed: the caller undoes the
        whole transaction and runs it again with savepoints."""
        if not savepoint:
            try:
                return await work(self)
            except Exception as exc:
                if database_failed(exc):
                    raise
                raise UnitFailed from exc
        await self.execute("SAVEPOINT undoable")
        try:
            result: T | Exception = await work(self)
        except Exception as exc:
            if database_failed(exc):
                raise
            await self.execute("ROLLBACK TO undoable")
            result = exc
        await self.execute("RELEASE undoable")
        return result

    async def keep_failed_callback(
        self, inbox_id: int, carrier: str, received_at: str, callback: bytes, error: str
    ) -> None:
        """A callback that could not be applied, kept for the operator (not lost)."""
        await self.execute(
            "INSERT OR IGNORE INTO failed_callbacks (inbox_id, carrier, received_at, callback, "
            "error) VALUES (?, ?, ?, ?, ?)",
            (inbox_id, carrier, received_at, callback, error),
        )

    async def inbox_applied_through(self) -> int:
        """The id of the last inbox callback applied here (gateway/store/inbox.py)."""
        row = await self.one("SELECT applied_through FROM inbox_cursor WHERE id = 1")
        return int(row["applied_through"]) if row else 0

    async def set_inbox_applied_through(self, inbox_id: int) -> None:
        await self.execute(
            "UPDATE inbox_cursor SET applied_through = ? WHERE id = 1 AND applied_through < ?",
            (inbox_id, inbox_id),
        )

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
        self, event_id: str, event_type: EventType, message: Message, body: bytes, now: str
    ) -> None:
        # Due no sooner than an earlier event of the message still waiting for its retry.
        await self.execute(
            "INSERT INTO outbox (event_id, customer_id, message_id, event_type, body, state, "
            "attempts, next_attempt_at, trigger, tm_create, tm_update, last_error) "
            "VALUES (?, ?, ?, ?, ?, 'pending', 0, MAX(?, COALESCE((SELECT MAX(next_attempt_at) "
            "FROM outbox WHERE message_id = ? AND state = 'pending'), '')), 'scheduled', ?, ?, '')",
            (event_id, message.customer_id, message.id, event_type.value, body, now, message.id,
             now, now),
        )  # fmt: skip


def _attempt_row(outcome: AttemptOutcome) -> tuple[Any, ...]:
    a = outcome.attempt
    return (
        a.outbox_seq, a.attempt_number, a.trigger, a.tm_attempt, a.url, a.status_code,
        a.duration_ms, a.error, a.response_excerpt, a.error_class,
    )  # fmt: skip


def _all_plainly_delivered(outcomes: Sequence[AttemptOutcome]) -> bool:
    """Delivered, no error, no health but a success, each event once: what the batch path
    writes (an event twice in one batch must count two attempts, which one UPDATE cannot)."""
    seqs = {o.attempt.outbox_seq for o in outcomes}
    return len(seqs) == len(outcomes) and all(
        o.state == "delivered"
        and o.next_attempt_at is None
        and not o.attempt.error
        and (o.health is None or o.health.succeeded)
        for o in outcomes
    )
