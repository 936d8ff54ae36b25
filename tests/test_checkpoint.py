"""The main database copies its log into the file in small steps: each checkpoint ends in one
disk flush of everything it copied, and the inbox's commits (which carriers wait on) queue
behind that flush when they share the disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway import normaliser_process
from gateway.errors import StoreError
from gateway.store import Store, sqlite

PAGE_BYTES = 4096
WAL_HEADER_BYTES = 32
FRAME_HEADER_BYTES = 24
PAGES_PER_TRANSACTION = 10


async def largest_log_frames(
    store: Store, db_path: Path, commits: int, every_fifth: Callable[[], Awaitable[None]] | None
) -> int:
    """Commit `commits` transactions of PAGES_PER_TRANSACTION pages each, calling `every_fifth`
    after every fifth; the most frames the log file held meanwhile."""
    await store.atomic(lambda tx: tx.execute("CREATE TABLE scratch (body BLOB NOT NULL)"))
    body = bytes(PAGE_BYTES * PAGES_PER_TRANSACTION)
    largest_log_bytes = 0
    for n in range(commits):
        await store.atomic(lambda tx: tx.execute("INSERT INTO scratch VALUES (?)", (body,)))
        if every_fifth is not None and n % 5 == 4:
            await every_fifth()
        log_bytes = os.stat(f"{db_path}-wal").st_size  # a metadata read, not blocking I/O
        largest_log_bytes = max(largest_log_bytes, log_bytes)
    return (largest_log_bytes - WAL_HEADER_BYTES) // (PAGE_BYTES + FRAME_HEADER_BYTES)


async def test_the_log_stays_near_the_checkpoint_size_under_back_to_back_commits(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "gateway.db"
    store = await Store.open(db_path)
    try:
        # 2,000 pages in all: SQLite's default would let 1,000 pile up.
        frames = await largest_log_frames(store, db_path, 200, every_fifth=None)
    finally:
        await store.close()

    # The log restarts after each checkpoint, so it never holds much more than one checkpoint's
    # worth of pages plus the transaction that crossed the line.
    assert frames <= sqlite.CHECKPOINT_PAGES + 2 * PAGES_PER_TRANSACTION, frames
    assert frames >= PAGES_PER_TRANSACTION  # the log was in use: the bound measured something


async def test_a_checkpointer_beside_the_writers_keeps_the_log_small(tmp_path: Path) -> None:
    """With the normaliser in its own process, commits leave checkpoints to a Checkpointer
    there (its own connection, so no commit holds the write lock through a flush)."""
    db_path = tmp_path / "gateway.db"
    store = await Store.open(db_path)
    checkpointer = await sqlite.Checkpointer.open(db_path)
    try:
        await store.leave_checkpoints_to_checkpointer()
        # As the Checkpointer's interval would fall, a few commits apart.
        frames = await largest_log_frames(store, db_path, 200, checkpointer.checkpoint)
    finally:
        await checkpointer.close()
        await store.close()

    # A log restart can miss one interval (it waits for the next writer): a few intervals'
    # pages at most, far under the commits' own 1,000.
    assert frames <= 3 * 5 * PAGES_PER_TRANSACTION + 10, frames
    assert frames >= PAGES_PER_TRANSACTION


async def test_without_the_checkpointer_commits_still_checkpoint_past_the_safety_line(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "gateway.db"
    store = await Store.open(db_path)
    try:
        await store.leave_checkpoints_to_checkpointer()  # and then no checkpointer runs
        frames = await largest_log_frames(store, db_path, 300, every_fifth=None)
    finally:
        await store.close()

    assert sqlite.CHECKPOINT_PAGES < frames <= sqlite.CHECKPOINT_SAFETY_PAGES + 20, frames


async def test_failing_checkpoints_are_logged_once_not_fifty_times_a_second(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / "gateway.db"
    store = await Store.open(db_path)
    checkpointer = await sqlite.Checkpointer.open(db_path)
    await store.leave_checkpoints_to_checkpointer()
    await checkpointer.checkpoint()  # works, and leaves the log empty
    await store.atomic(lambda tx: tx.execute("CREATE TABLE scratch (body BLOB NOT NULL)"))
    await store.atomic(lambda tx: tx.execute("INSERT INTO scratch VALUES (zeroblob(100000))"))
    await store.close()  # not the last connection: its pages wait in the log
    os.truncate(db_path, 0)  # the file under the log gone: every checkpoint fails
    caplog.set_level(logging.INFO, logger="gateway.normaliser_process")
    try:
        with pytest.raises(StoreError):
            await checkpointer.checkpoint()
        loop = asyncio.create_task(normaliser_process._checkpoint_database_forever(checkpointer))
        await asyncio.sleep(20 * normaliser_process.DATABASE_CHECKPOINT_INTERVAL_S)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    finally:
        await checkpointer.close()

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "checkpoints failing" in warnings[0].getMessage()
