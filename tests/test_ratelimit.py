"""Per-customer rate limits: the token bucket, and 429 with Retry-After over HTTP."""

from __future__ import annotations

from gateway.clock import ManualClock
from gateway.ratelimit import TokenBuckets
from tests.conftest import ServerFactory
from tests.test_api_messages import assert_error


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    buckets = TokenBuckets(rate_per_s=2.0, burst=3.0, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == 0.5
    assert buckets.take("b") == 0.0  # keys are independent
    clock.advance(0.5)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == 0.5
    clock.advance(100)
    assert [buckets.take("a") for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_a_rate_of_zero_turns_limits_off() -> None:
    buckets = TokenBuckets(rate_per_s=0, burst=1, clock=ManualClock())
    assert all(buckets.take("a") == 0.0 for _ in range(1000))


async def test_over_the_limit_is_429_with_retry_after(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(
        clock=manual_clock, run_workers=False, api={"rate_limit_per_s": 0.5, "rate_limit_burst": 2}
    )
    alice = await server.add_tenant("+15550000001")
    bob = await server.add_tenant("+15550000002")
    params = {"token": alice.token}
    assert (await server.client.get("/v1.0/messages", params=params)).status_code == 200
    assert (await server.send(alice, ["+15550000003"])).status_code == 200
    refused = await server.send(alice, ["+15550000003"])
    assert_error(refused, 429, "RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED")
    assert refused.headers["retry-after"] == "2"
    assert len(await server.gateway.store.list_messages(alice.id, 10, None)) == 1
    other = await server.client.get("/v1.0/messages", params={"token": bob.token})
    assert other.status_code == 200  # another customer is not slowed down
    manual_clock.advance(2)
    assert (await server.client.get("/v1.0/messages", params=params)).status_code == 200
