"""Carrier-independent tracking: report deadlines, per-part aggregation, inbound reassembly."""

from __future__ import annotations

from gateway.carriers.base import Callback, Concat, DeliveryReport, InboundSms, SendResult
from gateway.changes import Outcome
from gateway.clock import ManualClock
from gateway.models import Message, TargetStatus
from gateway.store import DispatchJob
from tests.conftest import GatewayServer, ServerFactory, event_kinds

S = TargetStatus


async def sent_message(server: GatewayServer, part_ids: tuple[str, ...] = ()) -> str:
    """A message whose one target a carrier accepted, with `part_ids` reported per part."""
    # Workers are off in these tests: the webhook address only makes events be recorded.
    tenant = await server.add_tenant("+15550000001", webhook_uri="http://127.0.0.1:9/hook")
    message_id = str((await server.send(tenant, ["+15550000002"])).json()["id"])
    job = DispatchJob(message_id, 0, "sandbox", tenant.number, "+15550000002", "hi", "", 0)
    first = part_ids[0] if part_ids else "c-1"
    await server.gateway.tracker.record_sent(job, SendResult(first, part_ids=part_ids))
    return message_id


async def report(server: GatewayServer, key: str, carrier_id: str, status: S) -> Outcome:
    event = DeliveryReport(carrier_id, status, status.value, "7" if status is S.FAILED else "")
    return await server.gateway.tracker.accept_callback("sandbox", Callback(key, event))


async def target_of(server: GatewayServer, message_id: str) -> tuple[S, int, str]:
    message = await server.gateway.store.get_message(message_id)
    assert message is not None
    target = message.targets[0]
    return target.status, target.parts, target.error_code


# Report deadline ----------------------------------------------------------------------------------


async def test_sent_without_a_final_report_becomes_dlr_timeout_and_a_late_report_applies(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(
        clock=manual_clock, run_workers=False, dispatch={"dlr_deadline_s": 600}
    )
    message_id = await sent_message(server)
    manual_clock.advance(599)
    assert await server.gateway.tracker.expire_reports() == 0
    manual_clock.advance(1)
    assert await server.gateway.tracker.expire_reports() == 1
    assert (await target_of(server, message_id))[0] is S.DLR_TIMEOUT
    assert await server.gateway.tracker.expire_reports() == 0  # once only
    assert await report(server, "late", "c-1", S.DELIVERED) is Outcome.APPLIED
    assert (await target_of(server, message_id))[0] is S.DELIVERED
    assert await event_kinds(server, message_id) == ["message_created"] + ["message_updated"] * 3


async def test_a_final_report_in_time_cancels_the_deadline(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(
        clock=manual_clock, run_workers=False, dispatch={"dlr_deadline_s": 600}
    )
    message_id = await sent_message(server)
    assert await report(server, "k", "c-1", S.DELIVERED) is Outcome.APPLIED
    manual_clock.advance(3600)
    assert await server.gateway.tracker.expire_reports() == 0
    assert (await target_of(server, message_id))[0] is S.DELIVERED


# Per-part reports ---------------------------------------------------------------------------------


async def test_a_multi_part_target_is_delivered_when_every_part_is(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    message_id = await sent_message(server, ("p-1", "p-2"))
    assert await target_of(server, message_id) == (S.SENT, 2, "")
    assert await report(server, "a", "p-1", S.DELIVERED) is Outcome.STALE
    assert await report(server, "b", "p-1", S.SENT) is Outcome.STALE  # a part moves forward only
    assert (await target_of(server, message_id))[0] is S.SENT
    assert await report(server, "c", "p-2", S.DELIVERED) is Outcome.APPLIED
    assert await target_of(server, message_id) == (S.DELIVERED, 2, "")


async def test_a_multi_part_target_fails_when_any_part_fails(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    message_id = await sent_message(server, ("p-1", "p-2", "p-3"))
    assert await report(server, "a", "p-2", S.FAILED) is Outcome.APPLIED
    assert await target_of(server, message_id) == (S.FAILED, 3, "7")
    assert await report(server, "b", "p-1", S.DELIVERED) is Outcome.STALE
    assert await report(server, "c", "p-3", S.DELIVERED) is Outcome.STALE
    assert (await target_of(server, message_id))[0] is S.FAILED
    # created, sent, failed: the later part reports add nothing.
    assert await event_kinds(server, message_id) == ["message_created"] + ["message_updated"] * 2


async def test_an_early_part_report_is_applied_with_the_send(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    message_id = str((await server.send(tenant, ["+15550000002"])).json()["id"])
    assert await report(server, "a", "p-1", S.DELIVERED) is Outcome.EARLY
    assert await report(server, "b", "p-2", S.DELIVERED) is Outcome.EARLY
    job = DispatchJob(message_id, 0, "sandbox", tenant.number, "+15550000002", "hi", "", 0)
    await server.gateway.tracker.record_sent(job, SendResult("p-1", part_ids=("p-1", "p-2")))
    assert await target_of(server, message_id) == (S.DELIVERED, 2, "")


# Inbound reassembly -------------------------------------------------------------------------------


def part(n: int, total: int, text: str, ref: str = "r1") -> Callback:
    sms = InboundSms(f"m-{ref}-{n}", "+15557770000", "+15550000001", text, None,
                     Concat(ref, total, n))  # fmt: skip
    return Callback(f"in-{ref}-{n}", sms)


async def inbound_messages(server: GatewayServer, customer_id: str) -> list[Message]:
    return await server.gateway.store.list_messages(customer_id, 100, None)


async def test_concatenated_inbound_is_joined_in_part_order(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001", webhook_uri="http://127.0.0.1:9/hook")
    tracker = server.gateway.tracker
    assert await tracker.accept_callback("sandbox", part(3, 3, "three")) is Outcome.BUFFERED
    assert await tracker.accept_callback("sandbox", part(1, 3, "one ")) is Outcome.BUFFERED
    assert await tracker.accept_callback("sandbox", part(1, 3, "one ")) is Outcome.DUPLICATE
    assert await inbound_messages(server, tenant.id) == []
    assert await tracker.accept_callback("sandbox", part(2, 3, "two ")) is Outcome.APPLIED
    [message] = await inbound_messages(server, tenant.id)
    assert message.text == "one two three"
    assert message.targets[0].parts == 3
    assert await event_kinds(server, message.id) == ["message_created"]


async def test_missing_parts_go_out_after_the_wait(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(
        clock=manual_clock, run_workers=False, inbound={"reassembly_wait_s": 30}
    )
    tenant = await server.add_tenant("+15550000001")
    tracker = server.gateway.tracker
    await tracker.accept_callback("sandbox", part(1, 3, "first, "))
    await tracker.accept_callback("sandbox", part(3, 3, "third"))
    manual_clock.advance(29)
    assert await tracker.flush_inbound() == 0
    manual_clock.advance(1)
    assert await tracker.flush_inbound() == 1
    [message] = await inbound_messages(server, tenant.id)
    assert message.text == "first, third"
    assert message.targets[0].parts == 2
    assert await tracker.flush_inbound() == 0
