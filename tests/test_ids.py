"""Message ids: valid UUIDv4 text, unique, and in creation order across milliseconds."""

from __future__ import annotations

import asyncio
import uuid

from gateway.ids import new_message_id
from tests.conftest import GatewayServer, ServerFactory
from tests.test_sandbox_flow import all_messages, inbound, post_callback

MS = 1_000_000  # ns


def test_ids_are_canonical_uuid4_text() -> None:
    for _ in range(1000):
        text = new_message_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower case, hyphens where the spec puts them
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_ids_begin_with_their_millisecond_and_sort_by_it() -> None:
    start_ns = 1_800_000_000_123 * MS
    earlier = [new_message_id(start_ns + n * MS) for n in range(50)]
    assert earlier == sorted(earlier)
    assert int(earlier[0].replace("-", "")[:12], 16) == start_ns // MS


def test_ids_within_one_millisecond_are_unique() -> None:
    now_ns = 1_800_000_000_000 * MS
    ids = {new_message_id(now_ns) for _ in range(20_000)}
    assert len(ids) == 20_000  # 74 random bits each


async def test_messages_sent_and_received_are_numbered_in_creation_order(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    sent = []
    for _ in range(3):
        response = await server.send(tenant, ["+15550000002"], "hello")
        sent.append(response.json()["id"])
        await asyncio.sleep(0.002)  # the next one in a later millisecond
    assert sent == sorted(sent)
    for n in range(3):
        callback = inbound(tenant.number, text=f"in {n}", event_id=f"sbx_in_{n}")
        assert (await post_callback(server, callback)).status_code == 200
        await server.gateway.normaliser.drain()
        await asyncio.sleep(0.002)
    received = [m for m in await all_messages(server, tenant.id) if m.direction.value == "inbound"]
    ids = [m.id for m in sorted(received, key=lambda m: m.text)]  # in the order they came
    assert len(ids) == 3
    assert ids == sorted(ids)
    assert sent[-1] < ids[0]


async def test_the_openapi_document_says_how_ids_are_made(gateway_server: GatewayServer) -> None:
    spec = (await gateway_server.client.get("/openapi.json")).json()
    described = spec["components"]["schemas"]["Message"]["properties"]["id"]["description"]
    assert "UUIDv4" in described
    assert "first 48 bits are the creation time in Unix milliseconds" in described
