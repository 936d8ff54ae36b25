"""The background loop shared by the dispatch and webhook workers: step, then wait or wake."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from gateway.errors import StoreError

log = logging.getLogger(__name__)


class Wakeup:
    """Lets a committed change start a worker's next step at once instead of at the next poll."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)
        self._event.clear()


async def run_forever(
    name: str, step: Callable[[], Awaitable[int]], wakeup: Wakeup, poll_interval_s: float
) -> None:
    """Call `step` until cancelled; a step that found work runs again without waiting."""
    while True:
        try:
            done = await step()
        except StoreError as exc:
            log.warning("%s: database unavailable, retrying: %s", name, exc)
            done = 0
        except Exception:
            # A bug in one step must not stop deliveries for good: log it and try again later.
            log.exception("%s: step failed, retrying", name)
            done = 0
        if done == 0:
            await wakeup.wait(poll_interval_s)
