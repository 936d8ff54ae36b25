"""`sent` targets for bench/ingest.py's delivery-report runs: copies of one the gateway sent.

Each report run needs a target still `sent` for every report it may answer (about 100,000 in
10 s), or most reports find theirs `delivered` already and take the no-op path. Sending that many
through the API and the sandbox takes minutes (about 700 a second here), so the benchmark sends a
few for real and copies one of them, row for row, in every table that holds a row of it, with a
new message id (made as the gateway makes them) and carrier id. What the copies hold (columns,
tables) is whatever the real one did, so the reports find what they would after a real send.

The copies go in while the gateway runs (idle between runs), under its own writer lock and in its
WAL mode, as one of its processes would write; the WAL is then checkpointed (RESTART, under the
lock), so the report run does not pay for copying it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from gateway.ids import new_message_id
from gateway.store.sqlite import WriterLock

# Where a sent message with one target of one part has a row (one each), and the column naming
# it there: the carrier's id is swapped by value, so a template with more ids is refused.
BY_MESSAGE = {"messages": "id", "targets": "message_id", "carrier_refs": "message_id"}
# Where a row would mean the copies differ from a real send: parts, a webhook event, a key.
MUST_BE_EMPTY = {
    "target_parts": "message_id",
    "outbox": "message_id",
    "idempotency_keys": "message_id",
}
CHUNK = 20_000  # copies per transaction


class Template:
    """One sent message's rows, by table, as column names and values."""

    def __init__(self, db: sqlite3.Connection, message_id: str) -> None:
        self.carrier_message_id = _carrier_id(db, message_id)
        self.rows: dict[str, tuple[list[str], list[tuple[object, ...]]]] = {}
        for table, column in BY_MESSAGE.items():
            cursor = db.execute(f"SELECT * FROM {table} WHERE {column} = ?", (message_id,))  # noqa: S608
            names = [d[0] for d in cursor.description]
            self.rows[table] = (names, cursor.fetchall())
            if len(self.rows[table][1]) != 1:
                raise RuntimeError(f"the template message has {len(self.rows[table][1])} {table}")
        for table, column in MUST_BE_EMPTY.items():
            found = db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (message_id,))  # noqa: S608
            if found.fetchone()[0]:
                raise RuntimeError(f"the template message has rows in {table}: not copied")
        self.message_id = message_id

    def copy(self, message_id: str, carrier_message_id: str) -> dict[str, list[tuple[object, ...]]]:
        """Every row, with the template's ids swapped for these."""
        swap = {self.message_id: message_id, self.carrier_message_id: carrier_message_id}
        return {
            table: [tuple(swap.get(v, v) if isinstance(v, str) else v for v in row) for row in rows]
            for table, (_, rows) in self.rows.items()
        }


def _carrier_id(db: sqlite3.Connection, message_id: str) -> str:
    found = db.execute(
        "SELECT carrier_message_id FROM targets WHERE message_id = ? AND status = 'sent'",
        (message_id,),
    ).fetchall()
    if len(found) != 1 or not found[0][0]:
        raise RuntimeError(f"message {message_id} does not have one `sent` target")
    return str(found[0][0])


@contextlib.contextmanager
def _writing(database: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.execute("PRAGMA busy_timeout=5000")
        yield db


def _insert(
    db: sqlite3.Connection,
    lock: WriterLock,
    inserts: Mapping[str, str],
    rows: Mapping[str, Sequence[tuple[object, ...]]],
) -> None:
    """One transaction, under the gateway's writer lock."""
    lock.acquire()
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            for table, sql in inserts.items():
                db.executemany(sql, rows[table])
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        lock.release()


def _checkpoint(db: sqlite3.Connection, lock: WriterLock) -> None:
    """The WAL into the database file; the next writer starts it over (not truncated: the
    report run would pay to grow the file again)."""
    lock.acquire()
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    finally:
        lock.release()
    if busy:
        raise RuntimeError("the WAL could not be checkpointed after copying: a reader held it")


def copy_sent(database: Path, message_id: str, count: int) -> list[str]:
    """`count` copies of the sent message `message_id`; their carrier message ids."""
    lock = WriterLock(database.with_name(database.name + ".lock"))
    try:
        with _writing(database) as db:
            template = Template(db, message_id)
            inserts = {
                table: f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608
                f"VALUES ({', '.join('?' * len(names))})"
                for table, (names, _) in template.rows.items()
            }
            carrier_ids = [f"sbx_{uuid.uuid4().hex}" for _ in range(count)]
            for first in range(0, count, CHUNK):
                rows: dict[str, list[tuple[object, ...]]] = {table: [] for table in inserts}
                for carrier_id in carrier_ids[first : first + CHUNK]:
                    for table, copied in template.copy(new_message_id(), carrier_id).items():
                        rows[table] += copied
                _insert(db, lock, inserts, rows)
            _checkpoint(db, lock)
        return carrier_ids
    finally:
        lock.close()
