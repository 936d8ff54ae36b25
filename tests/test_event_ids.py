"""Webhook ids: unique, in the documented shape, and in the order they were made."""

from __future__ import annotations

import re
import time

from gateway import events
from gateway.deliveries import DELIVERY_ID

SHAPE = re.compile(r"^msg_[0-9a-f]{32}$")


def test_ids_are_unique_and_keep_the_shape_the_delivery_log_accepts() -> None:
    ids = [events.new_event_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(SHAPE.fullmatch(i) and DELIVERY_ID.fullmatch(i) for i in ids)


def test_ids_made_later_sort_after_earlier_ones() -> None:
    first = events.new_event_id()
    time.sleep(0.002)  # the order is by millisecond
    second = events.new_event_id()
    assert first < second
    millis = int(second[4:16], 16)
    assert abs(millis - time.time() * 1000) < 1000  # the prefix is the time it was made
