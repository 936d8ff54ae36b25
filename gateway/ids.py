"""Message ids: UUIDv4 in form, time-ordered in their first 48 bits.

The spec makes a message id a UUIDv4. Purely random ones put every new message's rows on a random
page of each index keyed by its id (the messages' primary key, the targets' key), and each such
page is written to the log at the commit: two of an inbound SMS's three random pages. So, as
COMB GUIDs do, the first 48 bits are the Unix time in milliseconds, and the
rest are random but for the version (4) and variant bits that make it a valid UUIDv4: 74 random
bits, unique without coordination, and new ids land at the end of those indexes. The id tells
when the message was made, which its tm_create says anyway. bench/RESULTS.md has the figures.
"""

from __future__ import annotations

import os
import time
import uuid


def new_message_id(now_ns: int | None = None) -> str:
    """A new message id; `now_ns` (Unix time in ns) only where a test or a fill sets the time."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    return str(uuid.UUID(bytes=millis.to_bytes(6, "big") + os.urandom(10), version=4))
