"""The callback inbox: verified carrier callbacks, committed before the carrier is answered and
normalised into messages afterwards, oldest first.

It is a SQLite file of its own beside the main database, so the server's hot path commits
without ever waiting for the main database's write lock, which the normaliser (in another
process) holds while it applies callbacks. Rows leave the inbox only after the main database
records them as applied (`inbox_cursor`), so a crash between the two loses nothing and applies
nothing twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec

from gateway.errors import StoreError
from gateway.store import bulk
from gateway.store.sqlite import connect

# AUTOINCREMENT: ids never come back after a delete, so one applied id marks everything before.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "carrier TEXT NOT NULL, received_at TEXT NOT NULL, callback BLOB NOT NULL)"
)
_APPEND = "INSERT INTO inbox (carrier, received_at, callback) VALUES"
_SEQUENCE = "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'"
_AFTER = "SELECT id, carrier, received_at, callback FROM inbox WHERE id > ? ORDER BY id LIMIT ?"


# About 80 MB of log: the server's own checkpoints, should the normaliser's process be down.
CHECKPOINT_SAFETY_PAGES = 20_000


class InboxEntry(msgspec.Struct, frozen=True):
    id: int
    carrier: str
    received_at: str
    callback: bytes  # the parsed callback, msgspec JSON (see gateway.ingest)


def inbox_path(database_path: str | Path) -> Path:
    """The inbox file beside the main database: var/gateway.db -> var/gateway.inbox.db."""
    path = Path(database_path)
    return path.with_name(f"{path.stem}.inbox{path.suffix or '.db'}")


def _append_in_thread(raw: sqlite3.Connection, rows: Sequence[tuple[str, str, bytes]]) -> None:
    try:
        raw.execute("BEGIN IMMEDIATE")
        for sql, parameters in bulk.inserts(_APPEND, rows):  # see bulk: not executemany
            raw.execute(sql, parameters)
        raw.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            if raw.in_transaction:
                raw.execute("ROLLBACK")
        raise StoreError(f"inbox write failed: {exc}") from exc


def _ids_after_in_thread(raw: sqlite3.Connection, applied_through: int) -> None:
    """New ids start above `applied_through`, even if the inbox file was lost or replaced:
    otherwise new callbacks would be taken for applied ones and skipped."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        row = raw.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inbox'").fetchone()
        if row is None:
            raw.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('inbox', ?)", (applied_through,)
            )
        elif row[0] < applied_through:
            raw.execute(
                "UPDATE sqlite_sequence SET seq = ? WHERE name = 'inbox'", (applied_through,)
            )
        raw.execute("COMMIT")
    except sqlite3.Error:
        raw.execute("ROLLBACK")
        raise


class Inbox:
    """One connection to the inbox file. Open with `Inbox.open(path)`; close with `close()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, path: str | Path) -> Inbox:
        file = Path(path)
        conn = await connect(file, "callback inbox")  # FULL sync: on disk before the 2xx
        try:
            await conn.execute(_SCHEMA)
        except sqlite3.Error as exc:
            await conn.close()
            raise StoreError(f"cannot open callback inbox {file}: {exc}") from exc
        return cls(conn)

    async def close(self) -> None:
        await self._conn.close()

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        """`fn(raw_connection, *args)` in aiosqlite's thread, in one hop (as Store._in_thread)."""
        try:
            return await self._conn._execute(fn, self._conn._conn, *args)  # type: ignore[no-untyped-call]
        except ValueError as exc:  # aiosqlite's word for a closed connection
            raise StoreError(f"callback inbox unavailable: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"callback inbox error: {exc}") from exc

    async def append(self, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """(carrier, received_at, callback) rows, committed together (one disk sync)."""
        await self._in_thread(_append_in_thread, rows)

    async def after(self, applied_through: int, limit: int) -> list[InboxEntry]:
        """The oldest callbacks not yet applied, up to `limit`."""
        rows = await self._in_thread(_fetch, _AFTER, (applied_through, limit))
        return [InboxEntry(*row) for row in rows]

    async def forget_through(self, applied_through: int) -> None:
        """Delete callbacks the main database has applied."""
        await self._in_thread(_write, "DELETE FROM inbox WHERE id <= ?", (applied_through,))

    async def first_id(self) -> int:
        """The oldest callback's id (or the next id when there is none)."""
        rows = await self._in_thread(_fetch, "SELECT MIN(id) FROM inbox", ())
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
        return await self.last_id() + 1

    async def last_id(self) -> int:
        rows = await self._in_thread(
            _fetch, "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'", ()
        )
        return int(rows[0][0]) if rows else 0

    async def leave_checkpoints_to_reader(self) -> None:
        """Copying the log into the file (a checkpoint) normally falls to whichever commit fills
        1,000 pages, and that commit's callers wait for it. The normaliser's process does it
        instead (`checkpoint`), beside the appends; this connection then checkpoints only past
        CHECKPOINT_SAFETY_PAGES, should that process be down."""
        await self._in_thread(_fetch, f"PRAGMA wal_autocheckpoint={CHECKPOINT_SAFETY_PAGES}", ())

    async def checkpoint(self) -> None:
        """Copy the log into the file without waiting for anyone (appends go on meanwhile)."""
        await self._in_thread(_fetch, "PRAGMA wal_checkpoint(PASSIVE)", ())

    async def ids_after(self, applied_through: int) -> None:
        await self._in_thread(_ids_after_in_thread, applied_through)


def _fetch(raw: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    return raw.execute(sql, params).fetchall()


def _write(raw: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    raw.execute(sql, params)  # autocommit: one statement, its own transaction
