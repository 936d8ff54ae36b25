"""The per-endpoint circuit breaker: the pure rules, then a gateway pausing a refusing endpoint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import pytest

from gateway.breaker import Breakers
from gateway.clock import ManualClock
from tests.conftest import CustomerEndpoint, GatewayServer, ServerFactory, free_socket

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def later(seconds: float) -> dt.datetime:
    return START + dt.timedelta(seconds=seconds)


def test_failures_in_a_row_open_it_for_the_cooldown_then_one_attempt_probes() -> None:
    breakers = Breakers(failures_to_open=3, cooldown_s=30)
    assert not breakers.record("a", False, START)
    assert not breakers.record("a", False, START)
    assert breakers.room("a", 4, START) == 4  # two failures: still closed
    assert breakers.record("a", False, START)  # the third opens it
    assert not breakers.record("a", False, later(1))  # in flight when it opened: no news
    assert breakers.limited(4, later(29)) == {"a": 0}
    assert breakers.room("a", 4, later(29)) == 0
    assert breakers.limited(4, later(30)) == {"a": 1}
    assert breakers.room("a", 4, later(30)) == 1  # half open: one probe at a time
    assert breakers.record("a", False, later(31))  # the probe failed: open again
    assert breakers.room("a", 4, later(60)) == 0
    assert not breakers.record("a", True, later(61))  # a success closes it
    assert breakers.room("a", 4, later(61)) == 4


def test_a_success_resets_the_count_and_other_endpoints_are_untouched() -> None:
    breakers = Breakers(failures_to_open=2, cooldown_s=30)
    breakers.record("a", False, START)
    breakers.record("a", True, START)
    assert not breakers.record("a", False, START)  # one in a row again, not two
    assert breakers.record("b", False, START) is False
    assert breakers.limited(4, START) == {}


def test_zero_failures_to_open_never_opens() -> None:
    breakers = Breakers(failures_to_open=0, cooldown_s=30)
    for _ in range(100):
        assert not breakers.record("a", False, START)
    assert breakers.room("a", 4, START) == 4


async def breaker_gateway(
    start_gateway: ServerFactory, clock: ManualClock, failures_to_open: int
) -> GatewayServer:
    """Workers stepped by hand; a 30 s cooldown; up to 4 attempts in flight per endpoint."""
    return await start_gateway(
        clock=clock, run_workers=False,
        webhooks={"allowed_networks": ["127.0.0.0/8"], "breaker_failures": failures_to_open,
                  "breaker_cooldown_s": 30, "per_endpoint_concurrency": 4},
    )  # fmt: skip


async def test_a_refusing_endpoint_is_paused_and_its_events_spend_no_retries(
    start_gateway: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock(START)
    server = await breaker_gateway(start_gateway, clock, failures_to_open=3)
    refusing = free_socket()  # bound, never listening: every connection is refused
    try:
        port = refusing.getsockname()[1]
        tenant = await server.add_tenant("+15550000001", webhook_uri=f"http://127.0.0.1:{port}/h")
        ids = [(await server.send(tenant, ["+15550000002"])).json()["id"] for _ in range(6)]
        deliverer = server.gateway.deliverer
        assert await deliverer.run_once() == 4  # four fail; the third failure opened it
        assert await deliverer.run_once() == 0  # paused: the other two wait
        clock.advance(31)  # past the cooldown (and the failed ones' 5 s retry)
        released: list[Collection[int]] = []
        store = server.gateway.store
        real_release = store.release_events

        async def release(seqs: Collection[int]) -> None:
            released.append(seqs)
            await real_release(seqs)

        monkeypatch.setattr(store, "release_events", release)
        assert await deliverer.run_once() == 1  # one probe only
        assert released == []  # and only one claimed: none leased just to be handed back
        attempts = [
            attempts
            for message_id in ids
            for _, _, attempts in await server.gateway.store.outbox_states(message_id)
        ]
        # Four failures and the probe (the oldest due event): no event spent a retry waiting.
        assert sorted(attempts) == [0, 1, 1, 1, 1, 1]
    finally:
        refusing.close()


async def test_the_gateway_failing_does_not_pause_the_endpoint(
    start_gateway: ServerFactory,
    customer_endpoint: CustomerEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock(START)
    server = await breaker_gateway(start_gateway, clock, failures_to_open=2)
    tenant = await server.add_tenant("+15550000001", webhook_uri=customer_endpoint.url)
    for _ in range(3):
        await server.send(tenant, ["+15550000002"])
    deliverer = server.gateway.deliverer
    attempter = deliverer._attempter

    async def broken(*args: object) -> None:
        raise RuntimeError("a bug in the gateway")

    monkeypatch.setattr(attempter, "attempt", broken)
    assert await deliverer.run_once() == 3  # three internal failures, none the endpoint's
    monkeypatch.undo()
    clock.advance(6)  # past the first retry (5 s): not past any pause
    assert await deliverer.run_once() == 3  # all three go out: the endpoint was never paused
    assert len(customer_endpoint.received) == 3
