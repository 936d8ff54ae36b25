"""Group commit: concurrent writers share one write, and each learns of its outcome."""

from __future__ import annotations

import asyncio

from gateway.group_commit import GroupCommitter


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
