"""The collector settings `gateway serve` and its normaliser take once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.gc_tuning import YOUNG_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    _, middle, old = gc.get_threshold()
    tune_for_serving()
    assert gc.get_freeze_count() > 1000  # modules, functions, config: out of the collector's way
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    # Cycles made afterwards are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
