"""The delivery log: a customer's webhook deliveries (outbox rows) and their attempts, read for
the API and the CLI, and requeued by hand (resend, recover); re-enabling a disabled endpoint."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.models import Customer
from gateway.store.records import Attempt, customer_from
from gateway.store.sqlite import Store
from gateway.store.tx import Tx

_COLUMNS = (
    "seq, event_id, customer_id, message_id, event_type, state, attempts, next_attempt_at, "
    "last_error, tm_create, tm_update"
)
# A manual requeue: due at once, logged as manual; the event_id (webhook-id) is kept so that
# receivers still dedupe. lease_until is left alone: an attempt in flight finishes first.
# `requeues` tells an attempt in flight that its event was queued again meanwhile.
_REQUEUE = (
    "state = 'pending', next_attempt_at = ?, trigger = 'manual', tm_update = ?, "
    "requeues = requeues + 1"
)


class DeliveryRecord(msgspec.Struct, frozen=True):
    """One outbox row: an event on its way to (or done with) the customer's endpoint."""

    seq: int
    event_id: str
    customer_id: str
    message_id: str
    event_type: str
    state: str
    attempts: int
    next_attempt_at: str
    last_error: str
    tm_create: str
    tm_update: str


class DeliveryQuery(msgspec.Struct, frozen=True):
    """One page of a customer's deliveries, newest first, optionally filtered."""

    customer_id: str
    limit: int
    message_id: str | None = None
    state: str | None = None
    # Keyset: (tm_create, event_id) of the last delivery seen; event_id None means "before
    # this time" (a plain tm_create given as a page token).
    before: tuple[str, str | None] | None = None


class FailedRange(msgspec.Struct, frozen=True):
    """Failed deliveries created at or after `since`, up to `last_seq` (fixed when a recovery
    starts, so deliveries that fail again during it are not taken twice)."""

    since: str
    customer_id: str | None = None
    last_seq: int | None = None  # None: no upper bound yet


class DeliveryLog:
    """Reads and manual requeues of webhook deliveries, over a `Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def page(self, query: DeliveryQuery) -> list[DeliveryRecord]:
        where, params = _page_filter(query)
        sql = (
            f"SELECT {_COLUMNS} FROM outbox WHERE {where} "  # noqa: S608 - fixed fragments
            "ORDER BY tm_create DESC, event_id DESC LIMIT ?"
        )
        async with self._store.reading() as tx:
            rows = await tx.all(sql, [*params, query.limit])
        return [_record(row) for row in rows]

    async def get(self, event_id: str) -> tuple[DeliveryRecord, list[Attempt]] | None:
        """A delivery and its attempts, oldest first."""
        async with self._store.reading() as tx:
            row = await tx.one(
                f"SELECT {_COLUMNS} FROM outbox WHERE event_id = ?",  # noqa: S608
                (event_id,),
            )
            if row is None:
                return None
            record = _record(row)
            attempts = await _attempts(tx, [record.seq])
        return record, attempts.get(record.seq, [])

    async def of_message(self, message_id: str) -> list[tuple[DeliveryRecord, list[Attempt]]]:
        """Every delivery of one message, in the order they were queued, with their attempts."""
        async with self._store.reading() as tx:
            rows = await tx.all(
                f"SELECT {_COLUMNS} FROM outbox WHERE message_id = ? ORDER BY seq",  # noqa: S608
                (message_id,),
            )
            records = [_record(row) for row in rows]
            attempts = await _attempts(tx, [record.seq for record in records])
        return [(record, attempts.get(record.seq, [])) for record in records]

    async def requeue(self, event_id: str, customer_id: str, now: str) -> DeliveryRecord | None:
        """Queue one of the customer's deliveries again, due now (a manual resend)."""
        async with self._store.transaction() as tx:
            row = await tx.one(
                f"UPDATE outbox SET {_REQUEUE} WHERE event_id = ? AND customer_id = ? "  # noqa: S608
                f"RETURNING {_COLUMNS}",
                (now, now, event_id, customer_id),
            )
        return _record(row) if row else None

    async def failed_range(self, since: str, customer_id: str | None) -> tuple[FailedRange, int]:
        """The range a recovery works through, and how many deliveries it holds now."""
        where, params = _failed_filter(FailedRange(since, customer_id))
        async with self._store.reading() as tx:
            row = await tx.one(
                f"SELECT COUNT(*) AS n, MAX(seq) AS last FROM outbox WHERE {where}",  # noqa: S608
                params,
            )
        count = int(row["n"]) if row else 0
        last_seq = int(row["last"]) if row and row["last"] is not None else 0
        return FailedRange(since, customer_id, last_seq), count

    async def requeue_failed(
        self, failed: FailedRange, after_seq: int, limit: int, now: str
    ) -> tuple[int, int]:
        """Requeue the next `limit` failed deliveries of the range after `after_seq`, in one
        short transaction: how many, and the seq to continue after."""
        where, params = _failed_filter(failed)
        async with self._store.transaction() as tx:
            rows = await tx.all(
                f"UPDATE outbox SET {_REQUEUE} WHERE seq IN (SELECT seq FROM outbox "  # noqa: S608
                f"WHERE {where} AND seq > ? ORDER BY seq LIMIT ?) RETURNING seq",
                [now, now, *params, after_seq, limit],
            )
        return len(rows), max((int(row["seq"]) for row in rows), default=after_seq)

    async def enable_webhooks(self, customer_id: str) -> Customer | None:
        """Re-enable a customer's endpoint: no longer disabled, and its failure run forgotten."""
        async with self._store.transaction() as tx:
            row = await tx.one(
                "UPDATE customers SET webhook_disabled_at = '', webhook_disabled_reason = '', "
                "webhook_failing_since = '' WHERE id = ? RETURNING *",
                (customer_id,),
            )
        return customer_from(row) if row else None


def _page_filter(query: DeliveryQuery) -> tuple[str, list[Any]]:
    clauses = ["customer_id = ?"]
    params: list[Any] = [query.customer_id]
    if query.message_id is not None:
        clauses.append("message_id = ?")
        params.append(query.message_id)
    if query.state is not None:
        clauses.append("state = ?")
        params.append(query.state)
    if query.before is not None and query.before[1] is not None:
        clauses.append("(tm_create, event_id) < (?, ?)")
        params += [query.before[0], query.before[1]]
    elif query.before is not None:
        clauses.append("tm_create < ?")
        params.append(query.before[0])
    return " AND ".join(clauses), params


def _failed_filter(failed: FailedRange) -> tuple[str, list[Any]]:
    clauses = ["state = 'failed'", "tm_create >= ?"]
    params: list[Any] = [failed.since]
    if failed.last_seq is not None:
        clauses.append("seq <= ?")
        params.append(failed.last_seq)
    if failed.customer_id is not None:
        clauses.append("customer_id = ?")
        params.append(failed.customer_id)
    return " AND ".join(clauses), params


async def _attempts(tx: Tx, seqs: list[int]) -> dict[int, list[Attempt]]:
    if not seqs:
        return {}
    marks = ",".join("?" * len(seqs))
    rows = await tx.all(
        f"SELECT * FROM webhook_attempts WHERE outbox_seq IN ({marks}) ORDER BY id",  # noqa: S608
        seqs,
    )
    found: dict[int, list[Attempt]] = {}
    for row in rows:
        found.setdefault(int(row["outbox_seq"]), []).append(msgspec.convert(dict(row), Attempt))
    return found


def _record(row: Any) -> DeliveryRecord:
    return msgspec.convert(dict(row), DeliveryRecord)
