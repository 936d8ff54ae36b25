"""The customer Message API over real HTTP: shapes, errors, pagination, isolation, idempotency."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import pytest

from gateway.clock import NEVER, ManualClock
from tests.conftest import GatewayServer, ServerFactory

TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")
ADDRESS_KEYS = ["type", "target", "target_name", "name", "detail"]
MESSAGE_KEYS = [
    "id", "customer_id", "type", "source", "targets", "text", "direction",
    "tm_create", "tm_update", "tm_delete",
]  # fmt: skip
TARGET_KEYS = ["destination", "status", "parts", "tm_update"]


def assert_message_shape(message: dict[str, Any]) -> None:
    assert list(message)[: len(MESSAGE_KEYS)] == MESSAGE_KEYS
    assert str(uuid.UUID(message["id"])) == message["id"]
    assert uuid.UUID(message["id"]).version == 4
    assert message["type"] == "sms"
    assert list(message["source"]) == ADDRESS_KEYS
    for target in message["targets"]:
        assert list(target)[:4] == TARGET_KEYS
        assert list(target["destination"]) == ADDRESS_KEYS
        assert isinstance(target["parts"], int)
        assert TIME.match(target["tm_update"])
    for key in ("tm_create", "tm_update", "tm_delete"):
        assert TIME.match(message[key]), key


def assert_error(response: Any, http_status: int, status: str, reason: str) -> None:
    assert response.status_code == http_status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert list(body["error"]) == ["status", "reason", "message", "request_id"]
    assert body["error"]["status"] == status
    assert body["error"]["reason"] == reason
    assert body["error"]["request_id"].startswith("req_")
    assert body["error"]["message"]


async def message_count(server: GatewayServer, customer_id: str) -> int:
    return len(await server.gateway.store.list_messages(customer_id, 1000, None))


# Send --------------------------------------------------------------------------------------------


async def test_send_answers_the_created_message_with_all_targets_queued(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+821021656521")
    response = await server.send(tenant, ["+31616818985", "+821021656522"], "hello, this is test.")
    assert response.status_code == 200
    message = response.json()
    assert_message_shape(message)
    assert message["customer_id"] == tenant.id
    assert message["direction"] == "outbound"
    assert message["text"] == "hello, this is test."
    assert message["source"] == {"type": "tel", "target": "+821021656521", "target_name": "",
                                 "name": "", "detail": ""}  # fmt: skip
    assert [t["destination"]["target"] for t in message["targets"]] == [
        "+31616818985", "+821021656522"
    ]  # fmt: skip
    assert {t["status"] for t in message["targets"]} == {"queued"}
    assert {t["parts"] for t in message["targets"]} == {1}
    assert message["tm_update"] == NEVER
    assert message["tm_delete"] == NEVER
    assert {t["tm_update"] for t in message["targets"]} == {NEVER}
    stored = await server.client.get(
        f"/v1.0/messages/{message['id']}", params={"token": tenant.token}
    )
    assert stored.json() == message


async def test_send_counts_parts_per_segmentation_rules(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    long_gsm = await server.send(tenant, ["+15550000002"], "a" * 161)
    emoji = await server.send(tenant, ["+15550000002"], "\U0001f600" + "1" * 69)
    assert long_gsm.json()["targets"][0]["parts"] == 2
    assert emoji.json()["targets"][0]["parts"] == 2


async def test_send_accepts_addresses_without_type_as_tel(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    body = {"source": {"target": tenant.number},
            "destinations": [{"type": "", "target": "+15550000002"}], "text": "hi"}  # fmt: skip
    response = await server.client.post("/v1.0/messages", params={"token": tenant.token}, json=body)
    assert response.status_code == 200
    assert response.json()["source"]["type"] == "tel"
    assert response.json()["targets"][0]["destination"]["type"] == "tel"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "INVALID_JSON_BODY"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "+15550000002"}], '
         b'"text": "\\ud800"}', "INVALID_JSON_BODY"),
        (b"[]", "INVALID_ARGUMENT"),
        (b'{"destinations": [], "text": "x"}', "INVALID_ARGUMENT"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [], "text": "x"}',
         "INVALID_ARGUMENT"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "12"}], "text": "x"}',
         "INVALID_ARGUMENT"),
        (b'{"source": {"type": "email", "target": "+15550000001"}, '
         b'"destinations": [{"target": "+15550000002"}], "text": "x"}', "INVALID_ARGUMENT"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "+15550000002"}], '
         b'"text": ""}', "INVALID_ARGUMENT"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "+15550000002"}], '
         b'"text": 5}', "INVALID_ARGUMENT"),
        (b'{"source": {"target": "+15550000009"}, "destinations": [{"target": "+15550000002"}], '
         b'"text": "x"}', "SOURCE_NOT_OWNED"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "+15550000002\\n"}], '
         b'"text": "x"}', "INVALID_ARGUMENT"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "+15550000002"}], '
         b'"text": "\xff"}', "INVALID_JSON_BODY"),
        (b"[" * 5000 + b"]" * 5000, "INVALID_JSON_BODY"),
        (b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "INVALID_JSON_BODY"),
        (b'{"source": {"target": "+15550000001"}, "destinations": [{"target": "+15550000002"}], '
         b'"text": "x", "n": 1e999}', "INVALID_JSON_BODY"),
    ],
)  # fmt: skip
async def test_bad_send_is_400_and_stores_nothing(
    start_gateway: ServerFactory, body: bytes, reason: str
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    response = await server.client.post(
        "/v1.0/messages", params={"token": tenant.token}, content=body,
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert_error(response, 400, "INVALID_ARGUMENT", reason)
    assert await message_count(server, tenant.id) == 0


async def test_another_customers_number_is_source_not_owned(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    alice = await server.add_tenant("+15550000001")
    bob = await server.add_tenant("+15550000002")
    body = {"source": {"target": alice.number}, "destinations": [{"target": "+15550000003"}],
            "text": "x"}  # fmt: skip
    response = await server.client.post("/v1.0/messages", params={"token": bob.token}, json=body)
    assert_error(response, 400, "INVALID_ARGUMENT", "SOURCE_NOT_OWNED")


async def test_oversized_body_is_413(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    response = await server.send(tenant, ["+15550000002"], "x" * 70000)
    assert_error(response, 413, "INVALID_ARGUMENT", "BODY_TOO_LARGE")
    assert await message_count(server, tenant.id) == 0


# Get and delete ---------------------------------------------------------------------------------


async def test_get_errors(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    alice = await server.add_tenant("+15550000001")
    bob = await server.add_tenant("+15550000002")
    sent = (await server.send(alice, ["+15550000003"])).json()
    bad_id = await server.client.get("/v1.0/messages/not-a-uuid", params={"token": alice.token})
    assert_error(bad_id, 400, "INVALID_ARGUMENT", "INVALID_ID")
    unknown = await server.client.get(
        f"/v1.0/messages/{uuid.uuid4()}", params={"token": alice.token}
    )
    assert_error(unknown, 404, "NOT_FOUND", "MESSAGE_NOT_FOUND")
    other = await server.client.get(f"/v1.0/messages/{sent['id']}", params={"token": bob.token})
    assert_error(other, 404, "NOT_FOUND", "MESSAGE_NOT_FOUND")
    other_delete = await server.client.delete(
        f"/v1.0/messages/{sent['id']}", params={"token": bob.token}
    )
    assert_error(other_delete, 404, "NOT_FOUND", "MESSAGE_NOT_FOUND")
    still = await server.client.get(f"/v1.0/messages/{sent['id']}", params={"token": alice.token})
    assert still.json()["tm_delete"] == NEVER


async def test_delete_is_soft_and_hides_the_message(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    sent = (await server.send(tenant, ["+15550000003"])).json()
    url = f"/v1.0/messages/{sent['id']}"
    deleted = await server.client.delete(url, params={"token": tenant.token})
    assert deleted.status_code == 200
    body = deleted.json()
    assert_message_shape(body)
    assert body["tm_delete"] != NEVER
    assert body["tm_update"] == body["tm_delete"]
    assert body["targets"] == sent["targets"]
    gone = await server.client.get(url, params={"token": tenant.token})
    assert_error(gone, 404, "NOT_FOUND", "MESSAGE_NOT_FOUND")
    again = await server.client.delete(url, params={"token": tenant.token})
    assert_error(again, 404, "NOT_FOUND", "MESSAGE_NOT_FOUND")
    listed = await server.client.get("/v1.0/messages", params={"token": tenant.token})
    assert listed.json() == {"result": [], "next_page_token": ""}


# List and pagination ----------------------------------------------------------------------------


async def test_pagination_over_250_messages_sharing_tm_create(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    sent_ids = []
    for i in range(250):
        if i % 50 == 0:
            manual_clock.advance(1)  # five distinct tm_create values, fifty messages each
        sent_ids.append((await server.send(tenant, ["+15550000002"], f"m{i}")).json()["id"])
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"token": tenant.token, "page_size": "7", "page_token": token}
        page = (await server.client.get("/v1.0/messages", params=params)).json()
        pages += 1
        if not page["result"]:
            assert page["next_page_token"] == ""
            break
        assert len(page["result"]) <= 7
        seen += [m["id"] for m in page["result"]]
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == 250
    assert sorted(seen) == sorted(sent_ids)
    assert pages == 36  # 35 full pages + 5 on the last; the last page says no more
    creates = [(await server.gateway.store.get_message(i)) for i in seen]
    tm = [m.tm_create for m in creates if m is not None]
    assert tm == sorted(tm, reverse=True)


async def test_plain_tm_create_page_token_lists_older_messages(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    created = []
    for i in range(3):
        manual_clock.advance(1)
        created.append((await server.send(tenant, ["+15550000002"], f"m{i}")).json())
    params = {"token": tenant.token, "page_token": created[2]["tm_create"]}
    page = (await server.client.get("/v1.0/messages", params=params)).json()
    assert [m["id"] for m in page["result"]] == [created[1]["id"], created[0]["id"]]
    assert page["next_page_token"] == ""
    # A loosely written time means the same instant.
    loose = created[2]["tm_create"].replace(".000000", ".0")
    assert loose != created[2]["tm_create"]
    params = {"token": tenant.token, "page_token": loose}
    again = (await server.client.get("/v1.0/messages", params=params)).json()
    assert again == page


async def test_page_size_rules(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    for i in range(12):
        await server.send(tenant, ["+15550000002"], f"m{i}")
    default = (await server.client.get("/v1.0/messages", params={"token": tenant.token})).json()
    assert len(default["result"]) == 10
    assert default["next_page_token"]
    big = await server.client.get(
        "/v1.0/messages", params={"token": tenant.token, "page_size": 500}
    )
    assert len(big.json()["result"]) == 12
    assert big.json()["next_page_token"] == ""
    for bad in ("0", "-1", "ten", "1.5", ""):
        response = await server.client.get(
            "/v1.0/messages", params={"token": tenant.token, "page_size": bad}
        )
        assert_error(response, 400, "INVALID_ARGUMENT", "INVALID_REQUEST_PARAMETER")
    token_bad = await server.client.get(
        "/v1.0/messages", params={"token": tenant.token, "page_token": "yesterday"}
    )
    assert_error(token_bad, 400, "INVALID_ARGUMENT", "INVALID_REQUEST_PARAMETER")


async def test_list_shows_only_the_callers_messages(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    alice = await server.add_tenant("+15550000001")
    bob = await server.add_tenant("+15550000002")
    mine = (await server.send(alice, ["+15550000003"])).json()
    await server.send(bob, ["+15550000003"])
    page = (await server.client.get("/v1.0/messages", params={"token": alice.token})).json()
    assert [m["id"] for m in page["result"]] == [mine["id"]]
    assert_message_shape(page["result"][0])


# Idempotency ------------------------------------------------------------------------------------


async def test_idempotency_key_replays_and_conflicts(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    headers = {"Idempotency-Key": "order-42"}
    first = await server.send(tenant, ["+15550000002"], "once", headers=headers)
    assert first.status_code == 200
    body = {"text": "once", "destinations": [{"target": "+15550000002", "type": "tel"}],
            "source": {"target": tenant.number, "type": "tel"}}  # fmt: skip
    # Same JSON value, other key order and spacing: a replay.
    replay = await server.client.post(
        "/v1.0/messages", params={"token": tenant.token}, json=body, headers=headers
    )
    assert replay.status_code == 200
    assert replay.json() == first.json()
    conflict = await server.send(tenant, ["+15550000002"], "twice", headers=headers)
    assert_error(conflict, 409, "ALREADY_EXISTS", "IDEMPOTENCY_KEY_REUSED")
    assert await message_count(server, tenant.id) == 1
    other_key = await server.send(
        tenant, ["+15550000002"], "once", headers={"Idempotency-Key": "x"}
    )
    assert other_key.json()["id"] != first.json()["id"]
    # Keys are per customer: another customer's same key is independent.
    bob = await server.add_tenant("+15550000009")
    bobs = await server.send(bob, ["+15550000002"], "once", headers=headers)
    assert bobs.status_code == 200
    assert bobs.json()["id"] != first.json()["id"]


async def test_idempotent_replay_returns_the_current_state(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    headers = {"Idempotency-Key": "k1"}
    first = (await server.send(tenant, ["+15550000002"], headers=headers)).json()
    await server.gateway.dispatcher.run_once()
    replay = (await server.send(tenant, ["+15550000002"], headers=headers)).json()
    assert replay["id"] == first["id"]
    assert replay["targets"][0]["status"] == "sent"
    assert await message_count(server, tenant.id) == 1


# Routing errors ---------------------------------------------------------------------------------


async def test_unknown_path_and_wrong_method_use_the_envelope(
    gateway_server: GatewayServer,
) -> None:
    missing = await gateway_server.client.get("/v1.0/nothing")
    assert_error(missing, 404, "NOT_FOUND", "NOT_FOUND")
    wrong = await gateway_server.client.put("/v1.0/messages")
    assert_error(wrong, 405, "METHOD_NOT_ALLOWED", "METHOD_NOT_ALLOWED")
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


async def test_times_are_utc_with_six_digits(
    start_gateway: ServerFactory,
) -> None:
    clock = ManualClock(dt.datetime(2022, 3, 13, 15, 11, 5, 235717, tzinfo=dt.UTC))
    server = await start_gateway(clock=clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    message = (await server.send(tenant, ["+15550000002"])).json()
    assert message["tm_create"] == "2022-03-13 15:11:05.235717"
