"""Group commit: many callers' writes in one transaction, each caller resumed after the commit.

The first caller to find nothing in flight starts a flush; everyone arriving meanwhile joins the
next batch. No caller is answered before its write is on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar, cast

from gateway.store import Store, Tx

T = TypeVar("T")
R = TypeVar("R", covariant=True)


class GroupCommitter(Generic[T]):
    def __init__(self, write: Callable[[list[T]], Awaitable[None]]) -> None:
        self._write = write
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> None:
        """Return once `item` is committed; raise what the commit raised."""
        done = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                await self._write([item for item, _ in batch])
            except Exception as exc:  # every caller in the batch learns of the failure
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


class Work(Protocol[R]):
    def __call__(self, tx: Tx) -> Coroutine[Any, Any, R]: ...


class GroupTransactor:
    """Units of work submitted together run in one transaction, in one hop to the database
    thread, so concurrent carrier callbacks share one disk sync and each caller is answered
    after it (a failing unit is undone alone; see Store.run_batch)."""

    def __init__(self, store: Store, expect_failures: bool = False) -> None:
        self._store = store
        self._expect_failures = expect_failures  # see Store.run_batch
        self._committer: GroupCommitter[_Unit[Any]] = GroupCommitter(self._run)

    async def run(self, work: Work[R]) -> R:
        unit: _Unit[R] = _Unit(work)
        await self._committer.submit(unit)
        if isinstance(unit.result, Exception):
            raise unit.result
        return cast(R, unit.result)

    async def _run(self, units: list[_Unit[Any]]) -> None:
        results = await self._store.run_batch([u.work for u in units], self._expect_failures)
        for unit, result in zip(units, results, strict=True):
            unit.result = result


class _Unit(Generic[R]):
    def __init__(self, work: Work[R]) -> None:
        self.work = work
        self.result: R | Exception | None = None
