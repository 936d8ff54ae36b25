"""Group commit: concurrent writers share one write, and each learns of its outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.group_commit import GroupCommitter, GroupTransactor, Work
from gateway.store import Store, Tx


async def test_writers_arriving_together_share_a_batch() -> None:
    batches: list[list[int]] = []

    async def write(items: list[int]) -> None:
        batches.append(items)
        await asyncio.sleep(0)

    committer: GroupCommitter[int] = GroupCommitter(write)
    await asyncio.gather(*(committer.submit(i) for i in range(10)))
    assert sorted(i for batch in batches for i in batch) == list(range(10))
    assert len(batches) < 10  # shared, not one write each


async def test_a_failed_write_fails_every_caller_of_its_batch() -> None:
    async def write(items: list[int]) -> None:
        raise RuntimeError("disk full")

    committer: GroupCommitter[int] = GroupCommitter(write)
    results = await asyncio.gather(*(committer.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(result, RuntimeError) for result in results)


async def test_nothing_returns_before_its_write() -> None:
    written: list[int] = []

    async def write(items: list[int]) -> None:
        await asyncio.sleep(0.01)
        written.extend(items)

    committer: GroupCommitter[int] = GroupCommitter(write)
    await committer.submit(1)
    assert written == [1]  # submit returned only after the write


@pytest.mark.parametrize("expect_failures", [False, True])
@pytest.mark.parametrize("failure", ["raises", "suspends"])
async def test_units_share_a_transaction_and_a_failing_one_is_undone_alone(
    tmp_path: Path, expect_failures: bool, failure: str
) -> None:
    store = await Store.open(tmp_path / "g.db")
    transactor = GroupTransactor(store, expect_failures=expect_failures)

    def unit(key: str, fail: bool) -> Work[str]:
        async def work(tx: Tx) -> str:
            await tx.remember_callback("c", key, "2026-01-01 00:00:00.000000")
            if fail and failure == "raises":
                raise ValueError(key)
            if fail:  # a bug: waiting on something other than the database, in its thread
                await asyncio.sleep(0)
            return key

        return work

    try:
        results = await asyncio.gather(
            *(transactor.run(unit(f"k{i}", fail=i == 2)) for i in range(5)),
            return_exceptions=True,
        )
        assert results[:2] + results[3:] == ["k0", "k1", "k3", "k4"]
        assert isinstance(results[2], ValueError if failure == "raises" else RuntimeError)
        async with store.reading() as tx:
            rows = await tx.all("SELECT key FROM processed_callbacks ORDER BY key")
        assert [row["key"] for row in rows] == ["k0", "k1", "k3", "k4"]  # k2 undone alone
    finally:
        await store.close()
