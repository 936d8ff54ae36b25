"""Crash safety of a real `gateway serve` process: SIGKILL loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from gateway.auth import issue_token
from gateway.clock import SystemClock
from gateway.store import Store
from tests.conftest import JWT_SECRET, SANDBOX_SECRET, CustomerEndpoint, eventually, free_socket


def write_config(tmp_path: Path, port: int, retry_s: float) -> Path:
    config = tmp_path / "crash.toml"
    config.write_text(
        f'[server]\nport = {port}\npublic_url = "http://127.0.0.1:{port}"\n'
        f'[database]\npath = "{tmp_path / "crash.db"}"\n'
        f'[auth]\njwt_secret = "{JWT_SECRET}"\n'
        f"[webhooks]\nretry_schedule_s = [{retry_s}, {retry_s}, {retry_s}]\n"
        'allowed_networks = ["127.0.0.0/8"]\npoll_interval_s = 0.05\n'
        f'[carriers.sandbox]\nsecret = "{SANDBOX_SECRET}"\ndlr_delay_s = 0.05\n'
    )
    return config


async def cli(config: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


@asynccontextmanager
async def serving(config: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await eventually(lambda: ready(port), timeout_s=20)
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def ready(port: int) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/readyz")
    except httpx.TransportError:
        return False
    return response.status_code == 200


async def test_events_pending_at_sigkill_are_delivered_after_restart(
    tmp_path: Path, customer_endpoint: CustomerEndpoint
) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = write_config(tmp_path, port, retry_s=0.3)
    customer = await cli(
        config, "customers", "create", "--name", "c", "--webhook-uri", customer_endpoint.url
    )
    customer_id = customer.split('"id":"')[1].split('"')[0]
    await cli(config, "numbers", "add", "--customer", customer_id, "--number", "+15550000001",
              "--carrier", "sandbox")  # fmt: skip
    token = issue_token(JWT_SECRET, customer_id, 1.0, SystemClock())
    customer_endpoint.statuses = [503] * 1000  # the customer is down while the gateway dies
    async with serving(config, port) as process:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/v1.0/messages",
                params={"token": token},
                json={"source": {"target": "+15550000001"},
                      "destinations": [{"target": "+15550000002"}], "text": "survive"},
            )  # fmt: skip
        assert response.status_code == 200
        message_id = response.json()["id"]
        await customer_endpoint.wait_for(1)  # a delivery was tried and failed
        process.send_signal(signal.SIGKILL)
        await process.wait()
    customer_endpoint.statuses = []
    customer_endpoint.received.clear()
    async with serving(config, port):

        async def all_delivered() -> bool:
            store = await Store.open(tmp_path / "crash.db")
            try:
                states = await store.outbox_states(message_id)
            finally:
                await store.close()
            return len(states) >= 2 and all(state == "delivered" for _, state, _ in states)

        await eventually(all_delivered, timeout_s=20)
    mine = [r.json() for r in customer_endpoint.received if r.json()["data"]["id"] == message_id]
    assert mine[0]["type"] == "message_created"
    assert {event["type"] for event in mine[1:]} == {"message_updated"}
    assert mine[1]["data"]["targets"][0]["status"] == "sent"


async def test_serve_exits_when_the_database_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    config = tmp_path / "bad.toml"
    config.write_text(f'[database]\npath = "{blocker / "gw.db"}"\n[server]\nport = 1\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(20):
        output, _ = await process.communicate()
    assert process.returncode != 0
    assert b"cannot open database" in output
