"""Taking carrier callbacks: each verified callback is committed to the inbox (many callbacks
to one commit) before its carrier is answered; the normaliser turns it into messages after.
No HTTP: `app.py` calls `accept` once it has verified and parsed a callback."""

from __future__ import annotations

from collections.abc import Callable

from gateway.carriers.base import Callback
from gateway.clock import Clock, format_time
from gateway.errors import Unavailable
from gateway.group_commit import GroupCommitter
from gateway.normaliser import encode_callback
from gateway.store import Store
from gateway.store.inbox import Inbox

# How often the applied callbacks are deleted from the inbox (and the backlog counted).
TIDY_INTERVAL_S = 1.0
# Rows per delete: each delete waits its turn between callbacks' commits, so a long one after a
# burst would hold them up.
TIDY_CHUNK = 1000


class CallbackInbox:
    def __init__(
        self,
        inbox: Inbox,
        store: Store,
        clock: Clock,
        max_backlog: int,
        on_appended: Callable[[], None],
    ) -> None:
        self._inbox = inbox
        self._store = store
        self._clock = clock
        self._max_backlog = max_backlog
        self._on_appended = on_appended
        self._committer: GroupCommitter[tuple[str, str, bytes]] = GroupCommitter(self._append)
        self._backlog_at_tidy = 0
        self._appended_since_tidy = 0
        self._forgotten_through = 0

    @property
    def backlog(self) -> int:
        """Callbacks waiting to be normalised, as of the last tidy plus those taken since."""
        return self._backlog_at_tidy + self._appended_since_tidy

    async def accept(self, carrier: str, callback: Callback) -> None:
        """Returns once the callback is on disk; raises Unavailable when too many wait."""
        if self.backlog >= self._max_backlog:
            raise Unavailable(
                "INBOX_FULL", "too many callbacks are waiting to be processed; retry later"
            )
        received_at = format_time(self._clock.now())
        await self._committer.submit((carrier, received_at, encode_callback(callback)))

    async def _append(self, rows: list[tuple[str, str, bytes]]) -> None:
        await self._inbox.append(rows)
        self._appended_since_tidy += len(rows)
        self._on_appended()

    async def waiting(self) -> int:
        """Callbacks answered but not yet normalised, counted now."""
        applied_through = await self._store.inbox_applied_through()
        return max(0, await self._inbox.last_id() - applied_through)

    async def tidy(self) -> int:
        """Delete callbacks the normaliser has applied; recount the backlog. Returns 0 (the
        worker loop then waits its interval)."""
        applied_through = await self._store.inbox_applied_through()
        self._appended_since_tidy = 0
        last_id = await self._inbox.last_id()
        self._backlog_at_tidy = max(0, last_id - applied_through)
        if self._forgotten_through == 0:  # first tidy since start: whatever is left over
            self._forgotten_through = await self._inbox.first_id() - 1
        while self._forgotten_through < applied_through:
            through = min(applied_through, self._forgotten_through + TIDY_CHUNK)
            await self._inbox.forget_through(through)
            self._forgotten_through = through
        return 0
