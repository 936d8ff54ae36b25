"""The SQLite store: connection (WAL, FULL sync), migrations, transactions and queries.

The interface speaks domain words (messages, targets, outbox events) so a PostgreSQL store can be
written beside it with the same methods. Writes happen inside `transaction()`, whose `Tx` commits
everything a change causes - the message, its outbox events, idempotency keys - at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import msgspec

from gateway.clock import NEVER
from gateway.errors import OwnershipConflict, StoreError
from gateway.models import Customer, Message, Number
from gateway.store import bulk
from gateway.store.records import (
    Attempt,
    AttemptOutcome,
    ClaimedEvents,
    DispatchJob,
    EndpointHealth,
    InboundKey,
    TargetRef,
    customer_from,
    dispatch_job_from,
    outbox_event_from,
)
from gateway.store.schema import MIGRATIONS
from gateway.store.tx import InThread, Tx, UnitFailed

# Endpoints with an event due, oldest first; one index seek each. Only "?" marks go in {busy}.
_DUE_CUSTOMERS = (
    "SELECT id FROM (SELECT c.id AS id, (SELECT MIN(o.next_attempt_at) FROM outbox o "
    "WHERE o.state = 'pending' AND o.customer_id = c.id AND o.next_attempt_at <= ? "
    "AND (o.lease_until IS NULL OR o.lease_until <= ?)) AS first_due "
    "FROM customers c WHERE c.webhook_disabled_at = '' AND c.id NOT IN ({busy})) "
    "WHERE first_due IS NOT NULL ORDER BY first_due LIMIT ?"
)
# One endpoint's first due events that may go now: each message's oldest pending event only,
# and none of a message with an event in flight (a resent older event must not be overtaken).
# The walk stops at the limit, so it costs that endpoint's due events at most, no one else's.
_CUSTOMER_DUE_EVENTS = (
    "SELECT o.* FROM outbox o WHERE o.state = 'pending' AND o.customer_id = ? "
    "AND o.next_attempt_at <= ? AND (o.lease_until IS NULL OR o.lease_until <= ?) "
    "AND o.seq = (SELECT MIN(p.seq) FROM outbox p WHERE p.message_id = o.message_id "
    "AND p.state = 'pending') "
    "AND NOT EXISTS (SELECT 1 FROM outbox q WHERE q.message_id = o.message_id "
    "AND q.lease_until > ?) "
    "ORDER BY o.next_attempt_at, o.seq LIMIT ?"
)

T = TypeVar("T")


# Lists go in as one JSON array (bulk.json_list): one step where executemany takes one per row.
_CUSTOMERS_BY_ID = "SELECT * FROM customers WHERE id IN (SELECT value FROM json_each(?))"
_LEASE = "UPDATE outbox SET lease_until = ? WHERE seq IN (SELECT value FROM json_each(?))"


Unit = Callable[[Tx], Coroutine[Any, Any, T]]


def _drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a unit of work to its end without an event loop: over `InThread` its awaits never
    suspend. One that does waits on something outside the database, which is a bug."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    coroutine.close()
    raise RuntimeError("a unit of work awaited something other than the database")


async def connect(path: Path, what: str) -> aiosqlite.Connection:
    """A connection as every gateway file uses it: WAL, and FULL sync, so a commit is on disk
    before anyone is answered, even across power loss."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open {what} {path}: {exc}") from exc
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA busy_timeout=5000")
    except sqlite3.Error as exc:
        await conn.close()
        raise StoreError(f"cannot open {what} {path}: {exc}") from exc
    return conn


# As SQLite's busy_timeout: how long a writer waits for another process's transaction.
WRITE_LOCK_TIMEOUT_S = 5.0


class WriterLock:
    """Writers to one database file take turns across processes (the server, its normaliser,
    the CLI). SQLite's own busy handler retries with growing sleeps, so a process committing
    back to back (the normaliser, under load) kept a waiting one out for seconds. A flock wakes
    the waiter as soon as the holder lets go, and the holder does other work before it asks
    again. It is taken and let go only in the connection's database thread, and a dead
    holder's lock goes with its process. A holder that is alive but stuck (stopped, or in a
    debugger) costs a waiter `timeout_s`, then StoreError (a 503), as SQLite's BUSY would."""

    def __init__(self, path: Path, timeout_s: float | None = None) -> None:
        self._timeout_s = WRITE_LOCK_TIMEOUT_S if timeout_s is None else timeout_s
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._holding = False
        self._wait: _LockWait | None = None  # a helper still blocked in flock, if any

    def acquire(self) -> None:
        if self._holding:
            return
        wait = self._adopt_wait()
        if wait is None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._holding = True
                return
            except BlockingIOError:
                wait = self._wait = _LockWait.start(self._fd)
        if not wait.got.wait(self._timeout_s) and not wait.give_up():
            raise StoreError(
                f"database busy: another process has held its write lock for over "
                f"{self._timeout_s:g} s (a stopped gateway or CLI process?); retry later"
            )
        self._wait = None
        os.close(wait.fd)  # the lock stays: it is the open file's, and self._fd keeps that open
        self._holding = True

    def _adopt_wait(self) -> _LockWait | None:
        """The helper an earlier, timed-out acquire left blocked, if it still is: waiting on it
        again, rather than starting another, keeps a stuck holder from piling up threads and
        descriptors, and the lock is never asked for twice at once through the same open
        file (one could then let go of what the other holds)."""
        if self._wait is not None and not self._wait.wanted_again():
            self._wait = None  # it got the lock after all and let it go
        return self._wait

    def release(self) -> None:
        if self._holding:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            self._holding = False

    def close(self) -> None:
        self.release()
        os.close(self._fd)  # a helper still blocked keeps its own descriptor, and lets go


class _LockWait:
    """A helper thread blocked in flock for a WriterLock: flock has no time limit, and polling
    would keep missing the short gaps between a busy holder's transactions. It uses a
    duplicate of the lock's descriptor (the same open file, so the same lock, even if the lock
    file was replaced meanwhile). Got after its waiter gave up, the lock is let go at once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.got = threading.Event()
        self._decided = threading.Lock()
        self._wanted = True
        self._over = False  # it got the lock when nobody wanted it, and let it go

    @classmethod
    def start(cls, lock_fd: int) -> _LockWait:
        try:
            wait = cls(os.dup(lock_fd))
        except OSError as exc:
            raise StoreError(f"cannot wait for the database's write lock: {exc}") from exc
        try:
            threading.Thread(target=wait._block, name="writer-lock", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had
            os.close(wait.fd)
            raise StoreError(f"cannot wait for the database's write lock: {exc}") from exc
        return wait

    def give_up(self) -> bool:
        """After the waiter's time ran out: False, unless the lock came just then."""
        with self._decided:
            self._wanted = self.got.is_set()
            return self._wanted

    def wanted_again(self) -> bool:
        """A new waiter takes this one over; False if it is over."""
        with self._decided:
            self._wanted = not self._over
            return self._wanted

    def _block(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError:
            with self._decided:
                self._end()  # its waiter times out; the next acquire starts afresh
            return
        with self._decided:
            if self._wanted:
                self.got.set()
                return
            self._end()

    def _end(self) -> None:
        """Under `_decided`."""
        self._over = True
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)  # not just close: a forked child shares it
        os.close(self.fd)


def _rollback_in_thread(raw: sqlite3.Connection, writer: WriterLock) -> None:
    # SQLite may already have rolled back by itself (disk full, I/O error).
    with contextlib.suppress(sqlite3.Error):
        if raw.in_transaction:
            raw.execute("ROLLBACK")
    writer.release()


def _begin_in_thread(raw: sqlite3.Connection, writer: WriterLock) -> None:
    # Under the store's lock an open transaction can only be one a cancelled caller left behind
    # (its BEGIN ran after it gave up the lock): nothing of it was committed, so undo it.
    _rollback_in_thread(raw, writer)
    writer.acquire()
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        writer.release()
        raise StoreError(f"database unavailable: {exc}") from exc


def _commit_in_thread(raw: sqlite3.Connection, writer: WriterLock) -> None:
    try:
        raw.execute("COMMIT")
    except sqlite3.Error as exc:
        _rollback_in_thread(raw, writer)
        raise StoreError(f"commit failed: {exc}") from exc
    writer.release()


def _atomic_in_thread(raw: sqlite3.Connection, work: Unit[T], writer: WriterLock) -> T:
    """BEGIN IMMEDIATE, the whole unit, COMMIT - inside the database thread."""
    _begin_in_thread(raw, writer)
    try:
        result = _drive(work(Tx(InThread(raw))))
    except BaseException:
        _rollback_in_thread(raw, writer)
        raise
    _commit_in_thread(raw, writer)
    return result


def _batch_in_thread(
    raw: sqlite3.Connection, works: list[Unit[T]], expect_failures: bool, writer: WriterLock
) -> list[T | Exception]:
    """Every unit in one transaction; a unit that raises is undone alone and its exception
    returned in its place. Savepoints cost two statements a unit, so where units rarely fail
    (callbacks) the batch runs without them and only reruns with them when one does."""

    def run(savepoints: bool) -> list[T | Exception]:
        async def body(tx: Tx) -> list[T | Exception]:
            results: list[T | Exception] = []
            for work in works:
                if savepoints:
                    raw.execute("SAVEPOINT unit")
                try:
                    results.append(_drive(work(tx)))  # one unit each: its failure is its own
                except Exception as exc:
                    if not savepoints:
                        raise UnitFailed from exc
                    raw.execute("ROLLBACK TO unit")
                    results.append(exc)
                if savepoints:
                    raw.execute("RELEASE unit")
            return results

        return _atomic_in_thread(raw, body, writer)

    if expect_failures:
        return run(savepoints=True)
    try:
        return run(savepoints=False)
    except UnitFailed:
        return run(savepoints=True)


def _read_in_thread(raw: sqlite3.Connection, work: Unit[T]) -> T:
    return _drive(work(Tx(InThread(raw))))


# Pages of log after which a commit copies the log into the file (SQLite's default is 1,000),
# when the normaliser runs in the server's process. A checkpoint ends in one disk flush of every
# page it copied, and the inbox's commits, which carriers wait on, queue behind that flush on
# the same disk: at 1,400 callbacks/s, paced, the p99 was 24-34 ms with 1,000 (4 MiB flushes)
# and 8-23 ms with 128 (bench/RESULTS.md). With the normaliser in its own process, a
# Checkpointer there copies the log every 20 ms instead, and commits go back to SQLite's 1,000.
# Under steady writes a commit still crosses that line now and then: the log restarts only
# when a writer finds it all copied, and commits keep landing while the Checkpointer copies. That
# commit's checkpoint copies only what the Checkpointer has not (a small flush) and restarts the
# log. A line of 256 instead made end to end at 200/s worse (webhook p50 0.4-1.7 s against
# 0.02-0.4 s) for no clear gain at half rate.
CHECKPOINT_PAGES = 128
CHECKPOINT_SAFETY_PAGES = 1000


class Checkpointer:
    """Copies the main database's log into its file from a connection of its own, beside the
    writers: a checkpoint inside a commit holds the write lock through its disk flush."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, path: str | Path) -> Checkpointer:
        return cls(await connect(Path(path), "database"))

    async def checkpoint(self) -> None:
        """Copy what the log holds, without waiting for anyone (PASSIVE)."""
        try:
            await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise StoreError(f"checkpoint failed: {exc}") from exc

    async def close(self) -> None:
        await self._conn.close()


class Store:
    """The SQLite store. Open with `Store.open(path)`; close with `close()`."""

    def __init__(self, conn: aiosqlite.Connection, writer: WriterLock) -> None:
        self._conn = conn
        self._writer = writer
        # One connection serves the whole process: the lock keeps transactions from interleaving.
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        db_path = Path(path)
        conn = await connect(db_path, "database")
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"cannot open database {db_path}: {exc}") from exc
        try:
            writer = WriterLock(db_path.with_name(db_path.name + ".lock"))
        except OSError as exc:
            await conn.close()
            raise StoreError(f"cannot open database {db_path}: {exc}") from exc
        store = cls(conn, writer)
        try:
            await store._migrate()
        except BaseException:
            await store.close()
            raise
        return store

    async def leave_checkpoints_to_checkpointer(self) -> None:
        """Commits checkpoint only past SQLite's usual 1,000 pages: the Checkpointer (in the
        normaliser's process) does the bulk of it, and this is all there is while it is down."""
        try:
            await self._conn.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_SAFETY_PAGES}")
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    async def close(self) -> None:
        await self._conn.close()
        self._writer.close()

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
            begin = asyncio.ensure_future(
                self._in_thread(partial(_begin_in_thread, writer=self._writer))
            )
            try:
                await asyncio.shield(begin)
            except asyncio.CancelledError:
                # The BEGIN runs in the database thread all the same (it may be waiting for the
                # writer lock): let it, then undo it, so neither a transaction nor the writer
                # lock is left held once the store's lock is released, even if cancelled again.
                undo = asyncio.ensure_future(self._undo_begin(begin))
                while not undo.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(undo)
                raise
            try:
                yield Tx(self._conn)
            except BaseException:
                await self._rollback()
                raise
            await self._in_thread(partial(_commit_in_thread, writer=self._writer))

    async def _undo_begin(self, begin: asyncio.Future[None]) -> None:
        with contextlib.suppress(Exception):
            await begin
        await self._rollback()

    async def _rollback(self) -> None:
        with contextlib.suppress(StoreError):
            await self._in_thread(partial(_rollback_in_thread, writer=self._writer))

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in aiosqlite's database thread, in one hop, after whatever is queued there.
        aiosqlite has no public call for this; `_execute` and `_conn` are what its own methods
        use (pinned in pyproject.toml; every store test goes through here)."""
        try:
            raw = self._conn._conn
            result = await self._conn._execute(fn, raw)  # type: ignore[no-untyped-call]
        except ValueError as exc:  # aiosqlite's word for a closed connection
            raise StoreError(f"database unavailable: {exc}") from exc
        return cast(T, result)

    async def atomic(self, work: Unit[T]) -> T:
        """One unit of work in one transaction, run whole in the database thread: one hop
        instead of one per statement. `work` may await only its Tx."""
        async with self._lock:
            return await self._in_thread(partial(_atomic_in_thread, work=work, writer=self._writer))

    async def read(self, work: Unit[T]) -> T:
        """Reads in one hop, under the lock (never seeing another unit's uncommitted writes)."""
        async with self._lock:
            return await self._in_thread(partial(_read_in_thread, work=work))

    async def run_batch(
        self, works: list[Unit[T]], expect_failures: bool = False
    ) -> list[T | Exception]:
        """Run many units of work in one transaction (one disk sync for all), in one hop; a unit
        that fails is undone alone and its exception returned in its place. `expect_failures`:
        units often refuse (API requests), so each gets its savepoint from the start."""
        batch = partial(
            _batch_in_thread, works=works, expect_failures=expect_failures, writer=self._writer
        )
        async with self._lock:
            return await self._in_thread(batch)

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
        return [customer_from(row) for row in rows]

    async def rotate_webhook_secret(
        self, customer_id: str, new_secret: str, previous_expires_at: str
    ) -> Customer | None:
        """The new secret signs from now on; the current one keeps signing until it expires."""
        async with self.transaction() as tx:
            row = await tx.one(
                "UPDATE customers SET previous_webhook_secret = webhook_secret, "
                "previous_secret_expires_at = ?, webhook_secret = ? WHERE id = ? RETURNING *",
                (previous_expires_at, new_secret, customer_id),
            )
        return customer_from(row) if row else None

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
        return await self.read(lambda tx: tx.get_message(message_id))

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

        async def page(tx: Tx) -> list[Message]:
            return await tx.assemble(await tx.all(sql, params))

        return await self.read(page)

    # Outbound dispatch -----------------------------------------------------------------------

    async def claim_due_targets(self, now: str, lease_until: str, limit: int) -> list[DispatchJob]:
        """Queued targets whose time has come and that no live worker holds; leases them."""

        async def due(tx: Tx, limit: int) -> list[sqlite3.Row]:
            return await tx.all(
                "SELECT t.message_id, t.idx, t.carrier, t.destination, t.send_deadline_at, "
                "t.send_attempts, m.source, m.text FROM targets t JOIN messages m "
                "ON m.id = t.message_id WHERE t.next_send_at <= ? "
                "AND (t.lease_until IS NULL OR t.lease_until <= ?) ORDER BY t.next_send_at LIMIT ?",
                (now, now, limit),
            )

        async def claim(tx: Tx) -> list[DispatchJob]:
            rows = await due(tx, limit)
            await tx.executemany(
                "UPDATE targets SET lease_until = ? WHERE message_id = ? AND idx = ?",
                [(lease_until, row["message_id"], row["idx"]) for row in rows],
            )
            return [dispatch_job_from(row) for row in rows]

        if not await self.read(lambda tx: due(tx, 1)):
            return []  # a poll that finds nothing takes no write lock
        return await self.atomic(claim)

    async def overdue_reports(self, now: str, limit: int) -> list[TargetRef]:
        """Targets still `sent` whose final report is overdue."""
        async with self.reading() as tx:
            rows = await tx.all(
                "SELECT message_id, idx FROM targets WHERE dlr_deadline_at <= ? "
                "ORDER BY dlr_deadline_at LIMIT ?",
                (now, limit),
            )
        return [TargetRef(row["message_id"], row["idx"]) for row in rows]

    async def overdue_inbound(self, created_before: str, limit: int) -> list[InboundKey]:
        """Concatenated inbound SMS whose first part came before `created_before`."""
        async with self.reading() as tx:
            rows = await tx.all(
                "SELECT carrier, source, destination, concat_ref FROM inbound_parts "
                "GROUP BY carrier, source, destination, concat_ref "
                "HAVING MIN(tm_create) <= ? LIMIT ?",
                (created_before, limit),
            )
        return [msgspec.convert(dict(row), InboundKey) for row in rows]

    # Webhook outbox --------------------------------------------------------------------------

    async def claim_due_events(
        self, now: str, lease_until: str, limit: int, per_customer: int, room: Mapping[str, int]
    ) -> ClaimedEvents:
        """Due events to attempt, leased: each message's oldest pending event only (order), at
        most `per_customer` per endpoint, or its `room` where one is given (what is left beside
        its attempts in flight, or a paused endpoint's 0); none for disabled endpoints. With
        them, their customers (endpoint, method, secrets) as they are now, in the same hop."""
        busy = [customer_id for customer_id, free in room.items() if free <= 0]
        due_customers = _DUE_CUSTOMERS.format(busy=",".join("?" * len(busy)))

        async def due(tx: Tx, limit: int) -> list[sqlite3.Row]:
            rows: list[sqlite3.Row] = []
            # More endpoints than slots: some may have nothing that can go (order waits).
            candidates = await tx.all(due_customers, (now, now, *busy, max(limit * 4, 256)))
            for customer in candidates:
                take = min(room.get(customer["id"], per_customer), limit - len(rows))
                if take <= 0:
                    break
                rows += await tx.all(_CUSTOMER_DUE_EVENTS, (customer["id"], now, now, now, take))
            return rows

        async def claim(tx: Tx) -> ClaimedEvents:
            rows = await due(tx, limit)
            await tx.execute(_LEASE, (lease_until, bulk.json_list([row["seq"] for row in rows])))
            rows.sort(key=lambda row: (row["next_attempt_at"], row["seq"]))
            events = [outbox_event_from(row) for row in rows]
            customers = await _customers_by_id(tx, {event.customer_id for event in events})
            return ClaimedEvents(events, customers)

        # Most wakes find nothing that can go (events are made for endpoints only, and a
        # message's next event waits while one is in flight): those take no write lock, which
        # the normaliser and the API need. The same selection, read only, decides.
        if not await self.read(lambda tx: due(tx, 1)):
            return ClaimedEvents([], {})
        return await self.atomic(claim)

    async def prune(self, before: str, limit: int) -> int:
        """Delete up to `limit` finished deliveries (and their attempts) and as many callback ids
        last touched before `before`; how many rows went. Pending deliveries always stay."""

        async def work(tx: Tx) -> int:
            rows = await tx.all(
                "SELECT seq FROM outbox WHERE state = 'delivered' AND tm_update < ? LIMIT ?",
                (before, limit),
            )
            rows += await tx.all(
                "SELECT seq FROM outbox WHERE state = 'failed' AND tm_update < ? LIMIT ?",
                (before, limit),
            )
            seqs = [(row["seq"],) for row in rows]
            await tx.executemany("DELETE FROM webhook_attempts WHERE outbox_seq = ?", seqs)
            await tx.executemany("DELETE FROM outbox WHERE seq = ?", seqs)
            callbacks = await tx.execute(
                "DELETE FROM processed_callbacks WHERE rowid IN (SELECT rowid FROM "
                "processed_callbacks WHERE tm_create < ? LIMIT ?)",
                (before, limit),
            )
            return len(seqs) + callbacks.rowcount

        return await self.atomic(work)

    async def release_events(self, seqs: Collection[int]) -> None:
        """Give claimed events back unattempted (the worker had no room for them after all)."""
        await self.atomic(lambda tx: tx.execute(_LEASE, (None, bulk.json_list(list(seqs)))))

    async def finish_attempt(
        self,
        attempt: Attempt,
        requeues: int,
        state: str,
        next_attempt_at: str | None,
        health: EndpointHealth | None = None,
    ) -> None:
        """Record one attempt, the event's new state (pending with a next time, or final) and
        what it says of the endpoint's health."""
        await self.finish_attempts(
            [AttemptOutcome(attempt, requeues, state, next_attempt_at, health)]
        )

    async def finish_attempts(self, outcomes: list[AttemptOutcome]) -> None:
        """Record many attempts in one transaction (group commit: one disk sync for all)."""

        await self.atomic(lambda tx: tx.finish_attempts(outcomes))

    async def requeue_message_events(self, message_id: str, now: str) -> int:
        """Queue every event of a message again (manual resend); the webhook-ids stay."""
        async with self.transaction() as tx:
            cursor = await tx.execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?, trigger = 'manual', "
                "requeues = requeues + 1, "
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

    async def inbox_applied_through(self) -> int:
        async with self.reading() as tx:
            return await tx.inbox_applied_through()

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


async def _customers_by_id(tx: Tx, customer_ids: Collection[str]) -> dict[str, Customer]:
    rows = await tx.all(_CUSTOMERS_BY_ID, (bulk.json_list(list(customer_ids)),))
    return {row["id"]: customer_from(row) for row in rows}
