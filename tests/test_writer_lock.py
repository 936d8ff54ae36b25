"""Writers to one database file take turns across processes, so a process that commits back to
back (the normaliser under load) cannot keep another out: SQLite's own busy handler retries
with growing sleeps and nearly always wakes while the lock is held again."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.clock import format_time
from gateway.errors import StoreError
from gateway.models import Customer
from gateway.store import Store, sqlite
from tests.conftest import CustomerEndpoint, ServerFactory
from tests.test_api_messages import assert_error
from tests.test_webhook_semantics import send, setup, step

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


# A process that takes the write lock and keeps it, as one stopped mid-transaction would.
STUCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
time.sleep(60)
"""


class StuckHolder:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def stop(self) -> None:
        if self._process.returncode is None:
            self._process.kill()
            await self._process.wait()


@asynccontextmanager
async def stuck_holder(db: Path | str) -> AsyncIterator[StuckHolder]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STUCK, f"{db}.lock", stdout=asyncio.subprocess.PIPE
    )
    holder = StuckHolder(process)
    try:
        assert process.stdout is not None
        assert await process.stdout.readline() == b"holding\n"
        yield holder
    finally:
        await holder.stop()


@asynccontextmanager
async def store_behind_stuck_holder(db: Path) -> AsyncIterator[tuple[Store, StuckHolder]]:
    """A store whose writers wait 0.3 s at most, and a process holding its write lock."""
    store = await Store.open(db)
    store._writer._timeout_s = 0.3  # the lock is what is under test
    try:
        async with stuck_holder(db) as holder:
            yield store, holder
    finally:
        await store.close()


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


async def test_a_stuck_holder_costs_a_writer_the_timeout_then_store_error(
    tmp_path: Path,
) -> None:
    async with store_behind_stuck_holder(tmp_path / "gateway.db") as (store, holder):
        with pytest.raises(StoreError, match="write lock"):
            await asyncio.wait_for(store.create_customer(customer()), timeout=5.0)
        await holder.stop()
        # The abandoned wait let go of what it got: writes go on.
        await asyncio.wait_for(store.create_customer(customer()), timeout=5.0)
        assert len(await store.list_customers()) == 1


async def test_an_api_write_behind_a_stuck_holder_is_503_and_changes_nothing(
    start_gateway: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "WRITE_LOCK_TIMEOUT_S", 0.3)
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    async with stuck_holder(server.config.database.path):
        refused = await server.send(tenant, ["+15550000002"])
        assert_error(refused, 503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")
        listed = await server.client.get("/v1.0/messages", params={"token": tenant.token})
        assert listed.status_code == 200 and listed.json()["result"] == []  # reads go on
    sent = await server.send(tenant, ["+15550000002"])
    assert sent.status_code == 200, sent.text


async def test_claims_with_nothing_due_take_no_write_lock(tmp_path: Path) -> None:
    """Workers poll and are woken often; a poll that finds nothing must not queue behind (or
    hold up) the normaliser and the API for the write lock."""
    now, later = "2026-11-27T00:00:00.000000Z", "2026-11-27T00:01:00.000000Z"
    async with store_behind_stuck_holder(tmp_path / "gateway.db") as (store, _):
        assert (await store.claim_due_events(now, later, 10, 10, {})).events == []
        assert await store.claim_due_targets(now, later, 10) == []


async def test_a_poll_whose_due_events_wait_behind_one_in_flight_takes_no_write_lock(
    start_gateway: ServerFactory, customer_endpoint: CustomerEndpoint
) -> None:
    """A message's next event is due but waits while its last one is in flight (order): the
    claim would find nothing, so the poll must not queue for the lock."""
    server, clock, tenant = await setup(start_gateway, customer_endpoint)
    store = server.gateway.store
    message_id = await send(server, tenant)
    await step(server)  # message_created delivered
    await server.gateway.dispatcher.submit_due()  # message_updated (sent) queued
    now = format_time(clock.now())
    lease_until = format_time(clock.now() + dt.timedelta(seconds=60))
    [_in_flight] = (await store.claim_due_events(now, lease_until, 10, 10, {})).events
    assert await store.requeue_message_events(message_id, now) > 0  # due, behind it
    store._writer._timeout_s = 0.3  # the lock is what is under test
    async with stuck_holder(server.config.database.path):
        assert (await store.claim_due_events(now, lease_until, 10, 10, {})).events == []


def lock_descriptors(lock: Path) -> int:
    return sum(1 for fd in os.listdir("/proc/self/fd") if _points_to(fd, lock))


def _points_to(fd: str, lock: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(lock)
    except OSError:  # closed meanwhile (listdir's own descriptor)
        return False


def lock_helpers() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "writer-lock")


async def test_writers_timing_out_behind_a_stuck_holder_pile_up_nothing(tmp_path: Path) -> None:
    """Each timed-out write used to leave a thread blocked in flock with a descriptor of its
    own: about 720 an hour per process, until descriptors ran out (then a 500, not a 503)."""
    db = tmp_path / "gateway.db"
    lock = Path(f"{db}.lock")
    async with store_behind_stuck_holder(db) as (store, holder):
        store._writer._timeout_s = 0.05
        helpers_before, descriptors_before = lock_helpers(), lock_descriptors(lock)
        for _ in range(20):
            with pytest.raises(StoreError):
                await store.create_customer(customer())
        assert lock_helpers() - helpers_before <= 1
        assert lock_descriptors(lock) - descriptors_before <= 1
        await holder.stop()
        await asyncio.wait_for(store.create_customer(customer()), timeout=5.0)
        assert lock_helpers() == helpers_before
        assert lock_descriptors(lock) == descriptors_before


async def test_a_removed_lock_file_does_not_let_a_second_writer_in(tmp_path: Path) -> None:
    """Waiting must be on the lock already open, not on whatever the path names now."""
    db = tmp_path / "gateway.db"
    async with store_behind_stuck_holder(db) as (store, _):
        os.unlink(f"{db}.lock")
        with pytest.raises(StoreError, match="write lock"):
            await store.create_customer(customer())
