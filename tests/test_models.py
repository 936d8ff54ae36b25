"""The domain records: forward-only status transitions and the contract's exact JSON."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from gateway.clock import NEVER
from gateway.models import (
    Address,
    Direction,
    EventType,
    Message,
    Target,
    TargetStatus,
    WebhookEvent,
    advance_status,
)

S = TargetStatus


@pytest.mark.parametrize(
    ("current", "reported", "expected"),
    [
        (S.QUEUED, S.SENT, S.SENT),
        (S.QUEUED, S.DELIVERED, S.DELIVERED),
        (S.QUEUED, S.GW_TIMEOUT, S.GW_TIMEOUT),
        (S.SENT, S.DELIVERED, S.DELIVERED),
        (S.SENT, S.FAILED, S.FAILED),
        (S.SENT, S.DLR_TIMEOUT, S.DLR_TIMEOUT),
        (S.DLR_TIMEOUT, S.DELIVERED, S.DELIVERED),  # a late final report still applies
        (S.DLR_TIMEOUT, S.FAILED, S.FAILED),
        (S.SENT, S.SENT, None),  # duplicates change nothing
        (S.DELIVERED, S.SENT, None),  # late lower statuses are ignored
        (S.DELIVERED, S.FAILED, None),  # a final status is final
        (S.FAILED, S.DELIVERED, None),
        (S.DELIVERED, S.DLR_TIMEOUT, None),
        (S.GW_TIMEOUT, S.SENT, None),
        (S.RECEIVED, S.DELIVERED, None),
    ],
)
def test_status_only_moves_forward(
    current: TargetStatus, reported: TargetStatus, expected: TargetStatus | None
) -> None:
    assert advance_status(current, reported) == expected


def test_no_status_ever_moves_back_to_queued_or_sent_from_a_final_one() -> None:
    final = {S.DELIVERED, S.FAILED, S.GW_TIMEOUT, S.RECEIVED}
    for current, reported in itertools.product(TargetStatus, TargetStatus):
        moved = advance_status(current, reported)
        if current in final:
            assert moved is None, (current, reported)
        if moved is not None:
            assert moved == reported


def test_message_json_matches_the_contract_example() -> None:
    message = Message(
        id="a5d2114a-8e84-48cd-8bb2-c406eeb08cd1",
        customer_id="5e4a0680-804e-11ec-8477-2fea5968d85b",
        type="sms",
        source=Address("tel", "+821028286521"),
        targets=(Target(Address("tel", "+821021656521"), S.SENT, 1, "2022-03-13 15:11:06.497184"),),
        text="Hello, this is test message.",
        direction=Direction.OUTBOUND,
        tm_create="2022-03-13 15:11:05.235717",
        tm_update="2022-03-13 15:11:06.497278",
    )
    encoded = msgspec.json.encode(message)
    assert encoded.startswith(
        b'{"id":"a5d2114a-8e84-48cd-8bb2-c406eeb08cd1",'
        b'"customer_id":"5e4a0680-804e-11ec-8477-2fea5968d85b","type":"sms",'
        b'"source":{"type":"tel","target":"+821028286521","target_name":"","name":"","detail":""},'
        b'"targets":[{"destination":{"type":"tel","target":"+821021656521","target_name":"",'
        b'"name":"","detail":""},"status":"sent","parts":1,"tm_update":"2022-03-13 15:11:06.497184"'
    )
    assert encoded.endswith(
        b'"text":"Hello, this is test message.","direction":"outbound",'
        b'"tm_create":"2022-03-13 15:11:05.235717","tm_update":"2022-03-13 15:11:06.497278",'
        b'"tm_delete":"9999-01-01 00:00:00.000000"}'
    )
    assert message.tm_delete == NEVER
    event = msgspec.json.decode(
        msgspec.json.encode(WebhookEvent(EventType.MESSAGE_CREATED, message))
    )
    assert list(event) == ["type", "data"]
    assert event["type"] == "message_created"
