"""The main database copies its log into the file in small steps: each checkpoint ends in one
disk flush of everything it copied, and the inbox's commits (which carriers wait on) queue
behind that flush when they share the disk."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from gateway import normaliser_process
from gateway.errors import StoreError
from gateway.store import Store, sqlite
from tests.conftest import eventually, free_socket
from tests.test_crash import cli, serving, write_config
from tests.test_inbox import applied_through, normaliser_pids, signed_inbound

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

    safety = sqlite.CHECKPOINT_SAFETY_PAGES
    assert safety - 2 * PAGES_PER_TRANSACTION < frames <= safety + 2 * PAGES_PER_TRANSACTION, frames


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
        loop = asyncio.create_task(
            normaliser_process._checkpoint_forever(
                "database",
                checkpointer.checkpoint,
                normaliser_process.DATABASE_CHECKPOINT_INTERVAL_S,
            )
        )
        await asyncio.sleep(20 * normaliser_process.DATABASE_CHECKPOINT_INTERVAL_S)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    finally:
        await checkpointer.close()

    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "database checkpoints failing" in warnings[0].getMessage()


def log_copied(db_path: Path) -> tuple[int, int]:
    """(frames in the log, frames of them copied into the file), from the log's shared index:
    mxFrame in the first header copy, nBackfill right after the two copies (SQLite's wal.c)."""
    with open(f"{db_path}-shm", "rb") as shm:
        header = shm.read(136)
    frames = int.from_bytes(header[16:20], sys.byteorder)
    copied = int.from_bytes(header[96:100], sys.byteorder)
    return frames, copied


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_serve_copies_a_few_pages_of_log_soon_without_waiting_for_a_commit(
    tmp_path: Path,
) -> None:
    """A few pages, far under any commit's checkpoint line: only the normaliser's process's
    Checkpointer copies them, and it does so within moments."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = write_config(tmp_path, port, retry_s=0.3)
    customer = await cli(config, "customers", "create", "--name", "c")
    customer_id = customer.split('"id":"')[1].split('"')[0]
    await cli(config, "numbers", "add", "--customer", customer_id, "--number", "+15550000001",
              "--carrier", "sandbox")  # fmt: skip
    db_path = tmp_path / "crash.db"
    async with serving(config, port) as process:
        assert normaliser_pids(process.pid)  # the normaliser in its own process
        body, headers = signed_inbound("+15550000001", "in-1", "one")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.post("/hooks/sandbox", content=body, headers=headers)
        assert answer.status_code == 200

        async def applied_and_copied() -> bool:
            frames, copied = log_copied(db_path)
            return applied_through(db_path) > 0 and 0 < frames == copied

        await eventually(applied_and_copied)
        frames, _ = log_copied(db_path)
        assert frames < sqlite.CHECKPOINT_PAGES  # no commit's own checkpoint did it
