"""Writers to one database file take turns across processes, so a process that commits back to
back (the normaliser under load) cannot keep another out: SQLite's own busy handler retries
with growing sleeps and nearly always wakes while the lock is held again."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

from gateway.models import Customer
from gateway.store import Store

# Another process holding the write lock 50 ms per transaction, back to back, for up to 50 s.
HOG = """
import asyncio, sys, time
from gateway.store import Store

async def main():
    store = await Store.open(sys.argv[1])

    async def hold(tx):
        await tx.execute("UPDATE inbox_cursor SET applied_through = applied_through + 1")
        time.sleep(0.05)  # the batch's work, inside the transaction

    for n in range(1000):
        await store.atomic(hold)
        if n == 5:
            print("hogging", flush=True)
    await store.close()

asyncio.run(main())
"""


def customer() -> Customer:
    return Customer(str(uuid.uuid4()), "c", "", "POST", "whsec_x", "2026-11-27T00:00:00Z")


async def test_a_writer_gets_in_between_another_process_back_to_back_commits(
    tmp_path: Path,
) -> None:
    db = tmp_path / "gateway.db"
    store = await Store.open(db)
    write: asyncio.Task[None] | None = None
    hog = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOG, str(db), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert hog.stdout is not None
        assert await hog.stdout.readline() == b"hogging\n"
        write = asyncio.create_task(store.create_customer(customer()))
        done, _ = await asyncio.wait([write], timeout=1.0)
        assert write in done, "kept out while the other process kept committing"
        write.result()
        assert hog.returncode is None  # it got in while the other still ran, not after
        assert len(await store.list_customers()) == 1
    finally:
        if write is not None and not write.done():
            write.cancel()
        hog.kill()
        await hog.wait()
        await store.close()
