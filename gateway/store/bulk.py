"""Many rows in few statements.

sqlite3 gives up the GIL around every step of a statement, and executemany steps once per row:
each time, the database thread must win the GIL back from the event loop's thread, which is busy
serving requests, and waits. One INSERT of many rows, or one UPDATE joined to a JSON list, is
one step. bench/RESULTS.md has what it changed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

# Rows per INSERT statement, largest first: n rows take one statement per set bit of n, and each
# statement's text is one of a few, so the connection's statement cache keeps them compiled.
CHUNKS = (256, 128, 64, 32, 16, 8, 4, 2, 1)


def inserts(head: str, rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any]]]:
    """(sql, parameters) statements inserting `rows`, in order; `head` is `INSERT ... VALUES`."""
    start = 0
    for size in CHUNKS:
        while len(rows) - start >= size:
            chunk = rows[start : start + size]
            yield _values(head, len(chunk[0]), size), [value for row in chunk for value in row]
            start += size


@functools.cache
def _values(head: str, width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"{head} " + ", ".join([row] * rows)


def json_list(values: Sequence[Any]) -> str:
    """A list as one parameter, for `json_each(?)`: one statement text whatever its length."""
    return msgspec.json.encode(values).decode()
