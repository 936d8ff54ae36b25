"""The normaliser: applies the inbox's callbacks to messages, oldest first, a batch per
transaction. No HTTP and no process handling: `normaliser_process.py` runs it in a process of
its own, or the server runs it as a task (`[ingest] normaliser_process = false`)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from functools import partial

import msgspec

from gateway.carriers.base import Callback
from gateway.changes import Outcome
from gateway.clock import Clock, format_time
from gateway.store import Store, Tx, UnitFailed
from gateway.store.inbox import Inbox, InboxEntry
from gateway.tracking import Tracker

log = logging.getLogger(__name__)

# Callbacks per transaction: enough to share one disk sync widely, few enough that the main
# database's write lock is held only a few milliseconds (the API and workers write there too).
BATCH = 32
# A safety net: committing callbacks wakes the normaliser at once.
POLL_INTERVAL_S = 1.0

_decoder = msgspec.json.Decoder(Callback)
_encoder = msgspec.json.Encoder()

# (carrier, outcome) -> how many, for the callback metric.
Outcomes = Counter[tuple[str, str]]


def encode_callback(callback: Callback) -> bytes:
    """How a parsed callback waits in the inbox."""
    return _encoder.encode(callback)


class Normaliser:
    def __init__(
        self,
        store: Store,
        inbox: Inbox,
        tracker: Tracker,
        clock: Clock,
        report: Callable[[Outcomes], None],
    ) -> None:
        self._clock = clock
        self._store = store
        self._inbox = inbox
        self._tracker = tracker
        self._report = report
        self._lock = asyncio.Lock()  # a step and a drain never apply the same callbacks

    async def run_once(self) -> int:
        """Apply the oldest batch of waiting callbacks; how many there were."""
        async with self._lock:
            applied_through = await self._store.inbox_applied_through()
            entries = await self._inbox.after(applied_through, BATCH)
            if not entries:
                return 0
            try:
                # Savepoints cost two statements a callback, and callbacks rarely fail: a batch
                # runs without them, and again with them only when one does.
                outcomes = await self._store.atomic(
                    lambda tx: self._apply(tx, applied_through, entries, savepoints=False)
                )
            except UnitFailed:
                outcomes = await self._store.atomic(
                    lambda tx: self._apply(tx, applied_through, entries, savepoints=True)
                )
        self._report(outcomes)
        return len(entries)

    async def drain(self) -> None:
        """Apply everything waiting now."""
        while await self.run_once():
            pass

    async def _apply(
        self, tx: Tx, applied_through: int, entries: list[InboxEntry], savepoints: bool
    ) -> Outcomes:
        outcomes: Outcomes = Counter()
        applied_at = format_time(self._clock.now())
        if await tx.inbox_applied_through() != applied_through:
            return outcomes  # another normaliser (a previous process, exiting) applied them
        for entry in entries:
            apply = partial(self._apply_one, entry=entry, applied_at=applied_at)
            result = await tx.undoable(apply, savepoint=savepoints)
            if isinstance(result, Exception):
                # Not the database failing (that raises, and the batch is tried again): a bug,
                # data the database refuses, or an entry this version cannot read. Kept in
                # failed_callbacks, so the callbacks behind it go on and it is not lost.
                error = f"{type(result).__name__}: {result}"
                log.error(
                    "callback %d from %s could not be applied; kept in failed_callbacks: %s",
                    entry.id, entry.carrier, error,
                )  # fmt: skip
                await tx.keep_failed_callback(
                    entry.id, entry.carrier, entry.received_at, entry.callback, error
                )
                result = Outcome.FAILED
            outcomes[(entry.carrier, result.value)] += 1
        await tx.set_inbox_applied_through(entries[-1].id)
        return outcomes

    async def _apply_one(self, tx: Tx, entry: InboxEntry, applied_at: str) -> Outcome:
        callback = _decoder.decode(entry.callback)
        return await self._tracker.apply_callback(
            tx, entry.carrier, callback, entry.received_at, applied_at
        )
