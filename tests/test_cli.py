"""The `gateway` command line, driven in-process through `gateway.cli.main`.

Contract (message-api.md sections 5-7): every subcommand takes `--config FILE`; output meant for
scripts is JSON on stdout; failures exit 1 with a clear message on stderr. `main()` runs its
command with `asyncio.run`, so these tests are plain functions, except the two that talk to a
running gateway, which call `main` in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from gateway.auth import hash_access_key
from gateway.cli import main
from gateway.store import Store
from tests.conftest import SANDBOX_SECRET, ServerFactory

CLI_JWT_SECRET = "cli-test-jwt-secret-that-is-long-enough-for-hs256"
CLI_SANDBOX_SECRET = "cli-test-sandbox-secret-value"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Cli:
    """Runs `gateway ...` in-process against one config file."""

    config: Path
    db: Path
    capsys: pytest.CaptureFixture[str]

    def run(self, *argv: str, config_first: bool = False) -> tuple[int, str, str]:
        """Exit code, stdout and stderr of one command."""
        self.capsys.readouterr()
        config = ["--config", str(self.config)]
        args = [*config, *argv] if config_first else [*argv, *config]
        code = main(args)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok_json(self, *argv: str) -> Any:
        code, out, err = self.run(*argv)
        assert (code, err) == (0, ""), err
        assert out.endswith("\n")
        assert out.count("\n") == 1
        return json.loads(out)

    def ok_line(self, *argv: str) -> str:
        code, out, err = self.run(*argv)
        assert (code, err) == (0, ""), err
        assert out.endswith("\n")
        assert out.count("\n") == 1
        return out.strip()

    def fails(self, *argv: str) -> str:
        """Exit 1, nothing on stdout, and a single `gateway: ...` line on stderr."""
        code, out, err = self.run(*argv)
        assert code == 1, (out, err)
        assert out == ""
        assert err.startswith("gateway: ")
        assert err.endswith("\n")
        assert err.count("\n") == 1
        return err

    def create_customer(self, name: str = "acme") -> dict[str, Any]:
        customer: dict[str, Any] = self.ok_json("customers", "create", "--name", name)
        return customer


def write_config(path: Path, db: Path, public_url: str, *, extra: str = "") -> None:
    path.write_text(
        f"""
[server]
public_url = "{public_url}"

[database]
path = "{db}"

[auth]
jwt_secret = "env:TEST_JWT"

[webhooks]
allowed_networks = ["127.0.0.0/8"]

[carriers.sandbox]
secret = "{CLI_SANDBOX_SECRET}"
{extra}
"""
    )


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound (so nobody else takes it) but refuses connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def cli(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    closed_port: int,
) -> Cli:
    monkeypatch.setenv("TEST_JWT", CLI_JWT_SECRET)
    monkeypatch.chdir(tmp_path)  # no stray ./config.toml is read, nothing is written elsewhere
    db = tmp_path / "var" / "nested" / "gateway.db"
    config = tmp_path / "gateway.toml"
    write_config(config, db, f"http://127.0.0.1:{closed_port}")
    return Cli(config, db, capsys)


def store_call(db: Path, method: str, *args: Any) -> Any:
    async def call() -> Any:
        store = await Store.open(db)
        try:
            return await getattr(store, method)(*args)
        finally:
            await store.close()

    return asyncio.run(call())


# Customers -------------------------------------------------------------------------------------


def test_customers_create_prints_the_customer(cli: Cli) -> None:
    customer = cli.ok_json(
        "customers", "create", "--name", "Acme", "--webhook-uri", "http://127.0.0.1:9/h"
    )
    assert list(customer) == [
        "id", "name", "webhook_uri", "webhook_method", "webhook_secret", "tm_create",
        "webhook_disabled_at", "webhook_disabled_reason", "webhook_failing_since",
        "previous_webhook_secret", "previous_secret_expires_at",
    ]  # fmt: skip
    assert customer["webhook_disabled_at"] == ""
    assert str(uuid.UUID(customer["id"])) == customer["id"]
    assert customer["name"] == "Acme"
    assert customer["webhook_uri"] == "http://127.0.0.1:9/h"
    assert customer["webhook_method"] == "POST"
    secret = customer["webhook_secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert cli.db.exists()  # created with its folders on first use
    stored = store_call(cli.db, "get_customer", customer["id"])
    assert stored is not None
    assert stored.webhook_secret == secret


def test_customers_create_accepts_the_other_webhook_methods(cli: Cli) -> None:
    for given, stored in (("put", "PUT"), ("GET", "GET"), ("Delete", "DELETE")):
        customer = cli.ok_json("customers", "create", "--name", "m", "--webhook-method", given)
        assert customer["webhook_method"] == stored
        assert customer["webhook_uri"] == ""


def test_customers_create_refuses_a_private_webhook_address(cli: Cli) -> None:
    err = cli.fails(
        "customers", "create", "--name", "evil", "--webhook-uri", "http://10.0.0.1/hook"
    )
    assert "10.0.0.1" in err
    assert "blocked" in err
    assert cli.ok_json("customers", "list") == []


def test_customers_create_refuses_an_unknown_webhook_method(cli: Cli) -> None:
    err = cli.fails("customers", "create", "--name", "x", "--webhook-method", "PATCH")
    assert "--webhook-method" in err
    assert "POST, PUT, GET, DELETE" in err
    assert cli.ok_json("customers", "list") == []


def test_customers_list_prints_every_customer(cli: Cli) -> None:
    assert cli.ok_json("customers", "list") == []
    first = cli.create_customer("first")
    second = cli.create_customer("second")
    listed = cli.ok_json("customers", "list")
    assert isinstance(listed, list)
    assert sorted(listed, key=lambda c: c["name"]) == [first, second]


# Numbers ---------------------------------------------------------------------------------------


def test_numbers_add_prints_the_number(cli: Cli) -> None:
    customer = cli.create_customer()
    number = cli.ok_json(
        "numbers", "add", "--customer", customer["id"], "--number", "+15551234567",
        "--carrier", "sandbox",
    )  # fmt: skip
    assert list(number) == ["number", "customer_id", "carrier", "tm_create"]
    assert number["number"] == "+15551234567"
    assert number["customer_id"] == customer["id"]
    assert number["carrier"] == "sandbox"
    stored = store_call(cli.db, "get_number", "+15551234567")
    assert (stored.customer_id, stored.carrier) == (customer["id"], "sandbox")


def test_numbers_add_refuses_a_number_owned_by_another_customer(cli: Cli) -> None:
    owner = cli.create_customer("owner")
    other = cli.create_customer("other")
    add = ("numbers", "add", "--number", "+15551234567", "--carrier", "sandbox", "--customer")
    cli.ok_json(*add, owner["id"])
    err = cli.fails(*add, other["id"])
    assert "+15551234567" in err
    assert "owned by another customer" in err
    stored = store_call(cli.db, "get_number", "+15551234567")
    assert stored.customer_id == owner["id"]
    # The owner adding it again is fine.
    assert cli.ok_json(*add, owner["id"])["customer_id"] == owner["id"]


@pytest.mark.parametrize("bad", ["15551234567", "+0555123456", "+1555", "+1555123456789012", ""])
def test_numbers_add_refuses_a_number_that_is_not_e164(cli: Cli, bad: str) -> None:
    customer = cli.create_customer()
    err = cli.fails(
        "numbers", "add", "--customer", customer["id"], "--number", bad, "--carrier", "sandbox"
    )
    assert "E.164" in err


def test_numbers_add_refuses_an_unknown_carrier(cli: Cli) -> None:
    customer = cli.create_customer()
    err = cli.fails(
        "numbers", "add", "--customer", customer["id"], "--number", "+15551234567",
        "--carrier", "pigeon",
    )  # fmt: skip
    assert "--carrier" in err
    assert "sandbox" in err
    assert store_call(cli.db, "get_number", "+15551234567") is None


def test_numbers_add_refuses_an_unknown_customer(cli: Cli) -> None:
    unknown = str(uuid.uuid4())
    err = cli.fails(
        "numbers", "add", "--customer", unknown, "--number", "+15551234567", "--carrier", "sandbox"
    )
    assert unknown in err
    assert store_call(cli.db, "get_number", "+15551234567") is None


# Tokens and access keys ------------------------------------------------------------------------


def test_tokens_issue_prints_a_jwt_for_the_customer(cli: Cli) -> None:
    customer = cli.create_customer()
    started = time.time()
    token = cli.ok_line("tokens", "issue", "--customer", customer["id"])
    finished = time.time()
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, CLI_JWT_SECRET, algorithms=["HS256"])
    assert set(claims) == {"customer_id", "exp"}
    assert claims["customer_id"] == customer["id"]
    assert int(started) + 24 * 3600 <= claims["exp"] <= finished + 24 * 3600  # the default TTL
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "some-other-secret-that-is-long-enough-too", algorithms=["HS256"])


def test_tokens_issue_honours_ttl_hours(cli: Cli) -> None:
    customer = cli.create_customer()
    started = time.time()
    token = cli.ok_line("tokens", "issue", "--customer", customer["id"], "--ttl-hours", "2")
    finished = time.time()
    claims = jwt.decode(token, CLI_JWT_SECRET, algorithms=["HS256"])
    assert int(started) + 7200 <= claims["exp"] <= finished + 7200


@pytest.mark.parametrize("ttl", ["0", "-1"])
def test_tokens_issue_refuses_a_ttl_that_is_not_positive(cli: Cli, ttl: str) -> None:
    customer = cli.create_customer()
    err = cli.fails("tokens", "issue", "--customer", customer["id"], "--ttl-hours", ttl)
    assert "--ttl-hours" in err


def test_tokens_issue_refuses_an_unknown_customer(cli: Cli) -> None:
    unknown = str(uuid.uuid4())
    err = cli.fails("tokens", "issue", "--customer", unknown)
    assert unknown in err
    assert CLI_JWT_SECRET not in err


def test_accesskeys_create_prints_a_key_that_names_the_customer(cli: Cli) -> None:
    customer = cli.create_customer()
    key = cli.ok_line("accesskeys", "create", "--customer", customer["id"])
    assert key.startswith("ak_")
    assert len(key) > 40
    assert store_call(cli.db, "customer_for_access_key", hash_access_key(key)) == customer["id"]
    another = cli.ok_line("accesskeys", "create", "--customer", customer["id"])
    assert another != key


def test_accesskeys_create_refuses_an_unknown_customer(cli: Cli) -> None:
    unknown = str(uuid.uuid4())
    assert unknown in cli.fails("accesskeys", "create", "--customer", unknown)


# Sandbox and webhooks --------------------------------------------------------------------------


def test_sandbox_inbound_without_a_server_fails_clearly(cli: Cli, closed_port: int) -> None:
    err = cli.fails(
        "sandbox", "inbound", "--from", "+15557770000", "--to", "+15551234567", "--text", "hi"
    )
    assert "no gateway answered" in err
    assert f"http://127.0.0.1:{closed_port}/hooks/sandbox" in err
    assert CLI_SANDBOX_SECRET not in err


def test_webhooks_resend_of_an_unknown_message_fails(cli: Cli) -> None:
    unknown = str(uuid.uuid4())
    err = cli.fails("webhooks", "resend", "--message", unknown)
    assert unknown in err
    assert "no webhook events" in err


async def test_sandbox_inbound_reaches_a_running_gateway(
    start_gateway: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15551234567")
    monkeypatch.setenv("TEST_JWT", CLI_JWT_SECRET)
    config = tmp_path / "cli.toml"
    write_config(config, tmp_path / "gateway.db", server.url)
    config.write_text(config.read_text().replace(CLI_SANDBOX_SECRET, SANDBOX_SECRET))
    argv = ["sandbox", "inbound", "--from", "+15557770000", "--to", tenant.number]
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, [*argv, "--text", "hello from cli", "--config", str(config)]
    )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    printed = json.loads(out)
    assert printed["status"] == "accepted"
    assert (printed["from"], printed["to"]) == ("+15557770000", tenant.number)
    await server.settled()  # the CLI's callback came from outside the test client
    listed = await server.client.get("/v1.0/messages", params={"token": tenant.token})
    [message] = listed.json()["result"]
    assert message["direction"] == "inbound"
    assert message["text"] == "hello from cli"
    assert message["source"]["target"] == "+15557770000"
    assert message["targets"][0]["destination"]["target"] == tenant.number
    assert message["targets"][0]["status"] == "received"


async def test_commands_share_the_database_with_a_running_gateway(
    start_gateway: ServerFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = await start_gateway(run_workers=False)
    monkeypatch.setenv("TEST_JWT", CLI_JWT_SECRET)
    config = tmp_path / "cli.toml"
    write_config(config, tmp_path / "gateway.db", server.url)
    capsys.readouterr()
    code = await asyncio.to_thread(
        main, ["customers", "create", "--name", "live", "--config", str(config)]
    )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    customer = json.loads(out)
    assert await server.gateway.store.get_customer(customer["id"]) is not None
    code = await asyncio.to_thread(
        main, ["accesskeys", "create", "--customer", customer["id"], "--config", str(config)]
    )
    key = capsys.readouterr().out.strip()
    assert code == 0
    listed = await server.client.get("/v1.0/messages", params={"accesskey": key})
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"result": [], "next_page_token": ""}


# Configuration ---------------------------------------------------------------------------------


def test_config_is_accepted_before_and_after_the_subcommand(cli: Cli) -> None:
    customer = cli.create_customer("placed")
    code, out, err = cli.run("customers", "list", config_first=True)
    assert (code, err) == (0, "")
    assert json.loads(out) == [customer]
    code, out, err = cli.run("customers", "list", config_first=False)
    assert (code, err) == (0, "")
    assert json.loads(out) == [customer]


def test_a_missing_environment_variable_names_the_key_and_hides_secrets(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_JWT")
    monkeypatch.setenv("TEST_SANDBOX", CLI_SANDBOX_SECRET)
    text = cli.config.read_text().replace(f'"{CLI_SANDBOX_SECRET}"', '"env:TEST_SANDBOX"')
    cli.config.write_text(text)
    for argv in (("customers", "list"), ("tokens", "issue", "--customer", str(uuid.uuid4()))):
        err = cli.fails(*argv)
        assert "auth.jwt_secret" in err
        assert "TEST_JWT" in err
        assert CLI_SANDBOX_SECRET not in err
        assert CLI_JWT_SECRET not in err
    assert not cli.db.exists()  # start-up stopped before anything was opened


def test_a_missing_sandbox_secret_variable_names_its_key(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = cli.config.read_text().replace(f'"{CLI_SANDBOX_SECRET}"', '"env:MISSING_SANDBOX"')
    cli.config.write_text(text)
    monkeypatch.delenv("MISSING_SANDBOX", raising=False)
    err = cli.fails("customers", "list")
    assert "carriers.sandbox.secret" in err
    assert "MISSING_SANDBOX" in err
    assert CLI_JWT_SECRET not in err


def test_a_missing_config_file_fails(cli: Cli, tmp_path: Path) -> None:
    cli.config = tmp_path / "nowhere.toml"
    err = cli.fails("customers", "list")
    assert str(tmp_path / "nowhere.toml") in err


def test_a_config_file_that_is_not_toml_fails(cli: Cli) -> None:
    cli.config.write_text(cli.config.read_text() + "\n[server\n")
    err = cli.fails("customers", "list")
    assert str(cli.config) in err
    assert "not valid TOML" in err


def test_a_config_value_of_the_wrong_type_fails(cli: Cli) -> None:
    cli.config.write_text(cli.config.read_text() + "\n[dispatch]\nsend_deadline_s = 'soon'\n")
    err = cli.fails("customers", "list")
    assert str(cli.config) in err
    assert "send_deadline_s" in err


def test_an_unknown_config_key_fails(cli: Cli) -> None:
    cli.config.write_text(cli.config.read_text() + "\n[dispatch]\nsend_deadline = 5\n")
    err = cli.fails("customers", "list")
    assert "send_deadline" in err


def test_python_m_gateway_help_exits_0() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: gateway")
    for command in ("serve", "customers", "numbers", "tokens", "accesskeys", "sandbox", "webhooks"):
        assert command in result.stdout
