"""Garbage-collector settings for the long-running processes: the server and its normaliser."""

from __future__ import annotations

import gc

# CPython starts a young collection every 700 net allocations: under load that is every few
# requests, and it finds next to nothing, since reference counting frees what a request made.
# bench/ingest.py, maximum-rate inbound, same run: about 10-15 % more callbacks/s with this and
# the freeze below (bench/RESULTS.md).
YOUNG_THRESHOLD = 10_000


def tune_for_serving() -> None:
    """Call once start-up is done. What exists now (modules, config, the app) lives as long as
    the process, so it is frozen out of the collector's reach: full collections, otherwise
    tens of ms each here, no longer walk it."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
