"""The operator's webhook commands against a running gateway's database: recover, list, resend,
customers show and enable-webhooks.

Deliveries fail for real (a customer endpoint answering 500, the worker stepped by hand on a
manual clock); the commands run in-process through `gateway.cli.main` in a worker thread, as a
second process would, sharing the SQLite file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from gateway.cli import main
from gateway.clock import ManualClock, format_time
from gateway.signing import voipbin_signature
from tests.conftest import CustomerEndpoint, GatewayServer, ServerFactory, Tenant
from tests.test_cli import CLI_JWT_SECRET, write_config
from tests.test_deliveries_api import (
    ATTEMPT_KEYS,
    DELIVERY_KEYS,
    DESTINATION,
    ONE_RETRY,
    START,
    drain,
    fail_everything_pending,
)

SOURCE = "+15550000001"
OTHER_SOURCE = "+15550000009"


@dataclass
class Setup:
    server: GatewayServer
    clock: ManualClock
    tenant: Tenant
    endpoint: CustomerEndpoint
    config: Path
    capsys: pytest.CaptureFixture[str]

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of one `gateway` command."""
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, [*argv, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def cli_json(self, *argv: str) -> Any:
        code, out, err = await self.cli(*argv)
        assert (code, err) == (0, ""), err
        assert out.count("\n") == 1
        return json.loads(out)

    async def cli_fails(self, *argv: str) -> str:
        code, out, err = await self.cli(*argv)
        assert (code, out) == (1, ""), (out, err)
        assert err.startswith("gateway: ")
        return err

    async def recover(self, *argv: str) -> tuple[int, list[str]]:
        """`webhooks recover`: the count it printed and its progress lines."""
        code, out, err = await self.cli("webhooks", "recover", *argv)
        assert code == 0, err
        assert out.count("\n") == 1
        printed = json.loads(out)
        assert list(printed) == ["recovered"]
        return printed["recovered"], err.splitlines()

    async def failed_messages(self, count: int, tenant: Tenant | None = None) -> list[str]:
        """Send `count` messages whose only delivery then fails for good."""
        self.endpoint.statuses = [500] * 1000
        sent = []
        for i in range(count):
            response = await self.server.send(tenant or self.tenant, [DESTINATION], f"m{i}")
            assert response.status_code == 200, response.text
            sent.append(response.json()["id"])
        await fail_everything_pending(self.server, self.clock)
        return sent

    async def outbox(self) -> list[dict[str, Any]]:
        async with self.server.gateway.store.reading() as tx:
            rows = await tx.all(
                "SELECT event_id, customer_id, message_id, state, trigger, tm_create "
                "FROM outbox ORDER BY seq"
            )
        return [dict(row) for row in rows]


@pytest.fixture
async def setup(
    start_gateway: ServerFactory,
    customer_endpoint: CustomerEndpoint,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Setup:
    clock = ManualClock(START)
    db = tmp_path / "gateway.db"
    server = await start_gateway(clock=clock, run_workers=False, db_path=db, webhooks=ONE_RETRY)
    tenant = await server.add_tenant(SOURCE, webhook_uri=customer_endpoint.url)
    monkeypatch.setenv("TEST_JWT", CLI_JWT_SECRET)
    config = tmp_path / "cli.toml"
    write_config(config, db, server.url)
    return Setup(server, clock, tenant, customer_endpoint, config, capsys)


# Recover ----------------------------------------------------------------------------------------


async def test_recover_requeues_every_failed_delivery_and_shows_progress(setup: Setup) -> None:
    await setup.failed_messages(23)
    before = await setup.outbox()
    assert {row["state"] for row in before} == {"failed"}

    recovered, progress = await setup.recover("--since", "2026-01-01 00:00:00", "--batch-size", "5")
    assert recovered == 23
    assert progress == [f"recovered {n}/23" for n in (5, 10, 15, 20, 23)]
    after = await setup.outbox()
    assert [row["event_id"] for row in after] == [row["event_id"] for row in before]
    assert {(row["state"], row["trigger"]) for row in after} == {("pending", "manual")}
    assert await setup.recover("--since", "2026-01-01") == (0, [])  # nothing failed is left

    # The requeued deliveries are due at the CLI's "now"; bring the gateway's clock there.
    setup.clock.advance((dt.datetime.now(dt.UTC) - START).total_seconds() + 60)
    setup.endpoint.statuses.clear()
    received_before = len(setup.endpoint.received)
    await drain(setup.server)
    assert {row["state"] for row in await setup.outbox()} == {"delivered"}
    resent = setup.endpoint.received[received_before:]
    assert sorted(r.headers["webhook-id"] for r in resent) == sorted(
        row["event_id"] for row in before
    )


async def test_recover_takes_only_deliveries_since_the_time_and_of_the_customer(
    setup: Setup,
) -> None:
    other = await setup.server.add_tenant(OTHER_SOURCE, webhook_uri=setup.endpoint.url)
    old = await setup.failed_messages(3)
    setup.clock.advance(600)
    new = await setup.failed_messages(2)
    others = await setup.failed_messages(2, tenant=other)

    recovered = await setup.recover(
        "--since", "2026-01-01T00:05:00Z", "--customer", setup.tenant.id
    )
    assert recovered == (2, ["recovered 2/2"])
    states = {row["message_id"]: row["state"] for row in await setup.outbox()}
    assert [states[m] for m in new] == ["pending"] * 2
    assert [states[m] for m in old + others] == ["failed"] * 5

    # The same instant with an offset: now only the other customer's are left to take.
    assert await setup.recover("--since", "2026-01-01T01:05:00+01:00") == (2, ["recovered 2/2"])
    states = {row["message_id"]: row["state"] for row in await setup.outbox()}
    assert [states[m] for m in others] == ["pending"] * 2
    assert [states[m] for m in old] == ["failed"] * 3


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", ""])
async def test_recover_refuses_a_time_it_cannot_read(setup: Setup, since: str) -> None:
    await setup.failed_messages(1)
    err = await setup.cli_fails("webhooks", "recover", "--since", since)
    assert "--since" in err
    assert {row["state"] for row in await setup.outbox()} == {"failed"}


async def test_recover_refuses_an_unknown_customer(setup: Setup) -> None:
    unknown = str(uuid.uuid4())
    err = await setup.cli_fails(
        "webhooks", "recover", "--since", "2026-01-01", "--customer", unknown
    )
    assert unknown in err


# List and resend --------------------------------------------------------------------------------


async def test_list_prints_a_messages_deliveries_with_their_attempts(setup: Setup) -> None:
    [message_id] = await setup.failed_messages(1)
    setup.clock.advance(1)
    deleted = await setup.server.client.delete(
        f"/v1.0/messages/{message_id}", params={"token": setup.tenant.token}
    )
    assert deleted.status_code == 200

    created, queued = await setup.cli_json("webhooks", "list", "--message", message_id)
    assert list(created) == [*DELIVERY_KEYS, "attempts"]
    assert (created["type"], created["state"], created["attempt_count"]) == (
        "message_created",
        "failed",
        2,
    )
    assert [list(a) for a in created["attempts"]] == [ATTEMPT_KEYS] * 2
    assert [(a["attempt_number"], a["status_code"]) for a in created["attempts"]] == [
        (1, 500),
        (2, 500),
    ]
    assert created["attempts"][0]["tm_attempt"] == format_time(START)
    assert (queued["type"], queued["state"], queued["attempts"]) == (
        "message_deleted",
        "pending",
        [],
    )
    assert {created["message_id"], queued["message_id"]} == {message_id}


async def test_list_refuses_an_unknown_or_malformed_message(setup: Setup) -> None:
    unknown = str(uuid.uuid4())
    assert unknown in await setup.cli_fails("webhooks", "list", "--message", unknown)
    assert "--message" in await setup.cli_fails("webhooks", "list", "--message", "nope")


async def test_resend_by_message_still_requeues_its_events(setup: Setup) -> None:
    [message_id] = await setup.failed_messages(1)
    printed = await setup.cli_json("webhooks", "resend", "--message", message_id)
    assert printed == {"message_id": message_id, "events_queued": 1}
    [row] = await setup.outbox()
    assert (row["state"], row["trigger"]) == ("pending", "manual")


# Endpoint health --------------------------------------------------------------------------------


async def disable(server: GatewayServer, customer_id: str, reason: str) -> None:
    """What the worker writes when it disables an endpoint (set here directly)."""
    async with server.gateway.store.transaction() as tx:
        await tx.execute(
            "UPDATE customers SET webhook_disabled_at = ?, webhook_disabled_reason = ?, "
            "webhook_failing_since = ? WHERE id = ?",
            ("2026-01-06 00:00:00.000000", reason, "2026-01-01 00:00:00.000000", customer_id),
        )


async def test_enable_webhooks_clears_the_disabled_endpoint(setup: Setup) -> None:
    customer_id = setup.tenant.id
    await disable(setup.server, customer_id, "failing since 2026-01-01 (5 days)")
    shown = await setup.cli_json("customers", "show", "--customer", customer_id)
    assert shown["id"] == customer_id
    assert shown["webhook_disabled_at"] == "2026-01-06 00:00:00.000000"
    assert shown["webhook_disabled_reason"] == "failing since 2026-01-01 (5 days)"
    assert shown["webhook_failing_since"] == "2026-01-01 00:00:00.000000"

    enabled = await setup.cli_json("customers", "enable-webhooks", "--customer", customer_id)
    assert list(enabled) == list(shown)
    assert (
        enabled["webhook_disabled_at"],
        enabled["webhook_disabled_reason"],
        enabled["webhook_failing_since"],
    ) == ("", "", "")
    assert {**enabled, "webhook_disabled_at": "", "webhook_disabled_reason": ""} == {
        **shown,
        "webhook_disabled_at": "",
        "webhook_disabled_reason": "",
        "webhook_failing_since": "",
    }  # nothing else changed
    stored = await setup.server.gateway.store.get_customer(customer_id)
    assert stored is not None
    assert (stored.webhook_disabled_at, stored.webhook_failing_since) == ("", "")
    assert await setup.cli_json("customers", "show", "--customer", customer_id) == enabled


async def test_customer_commands_refuse_an_unknown_customer(setup: Setup) -> None:
    unknown = str(uuid.uuid4())
    for action in ("show", "enable-webhooks"):
        assert unknown in await setup.cli_fails("customers", action, "--customer", unknown)


async def test_a_disabled_endpoints_deliveries_wait_until_it_is_enabled(setup: Setup) -> None:
    [message_id] = await setup.failed_messages(1)
    await disable(setup.server, setup.tenant.id, "410 Gone")
    await setup.cli_json("webhooks", "resend", "--message", message_id)
    # The resend is due at the CLI's "now"; bring the gateway's clock there.
    setup.clock.advance((dt.datetime.now(dt.UTC) - START).total_seconds() + 60)
    setup.endpoint.statuses.clear()
    received = len(setup.endpoint.received)

    await drain(setup.server)
    assert len(setup.endpoint.received) == received  # disabled: nothing is sent
    assert [row["state"] for row in await setup.outbox()] == ["pending"]
    await setup.cli_json("customers", "enable-webhooks", "--customer", setup.tenant.id)
    await drain(setup.server)
    assert len(setup.endpoint.received) == received + 1
    assert [row["state"] for row in await setup.outbox()] == ["delivered"]


async def test_rotate_secret_keeps_the_old_one_signing_for_the_grace_period(
    start_gateway: ServerFactory,
    customer_endpoint: CustomerEndpoint,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await start_gateway(run_workers=False)  # the system clock: the official check
    tenant = await server.add_tenant(SOURCE, webhook_uri=customer_endpoint.url)
    old_secret = tenant.customer.webhook_secret
    config = tmp_path / "rotate.toml"
    config.write_text(f'[database]\npath = "{server.config.database.path}"\n')
    argv = ["customers", "rotate-secret", "--customer", tenant.id, "--config", str(config)]
    assert await asyncio.to_thread(main, argv) == 0
    rotated = json.loads(capsys.readouterr().out)
    assert rotated["previous_webhook_secret"] == old_secret
    assert rotated["webhook_secret"] not in ("", old_secret)
    assert rotated["previous_secret_expires_at"] > format_time(server.clock.now())
    await server.send(tenant, [DESTINATION])
    await server.gateway.deliverer.run_once()
    [received] = customer_endpoint.received
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    for secret in (rotated["webhook_secret"], old_secret):  # either verifies, officially
        Webhook(secret).verify(received.body, received.headers)
    new_only = voipbin_signature(rotated["webhook_secret"], received.body)
    assert received.headers["x-voipbin-signature"] == new_only
