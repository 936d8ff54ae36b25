"""Shared harness: the real app on a real uvicorn socket, customer endpoints, seeded tenants."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import uvicorn
import uvloop

from gateway.app import GatewayApp, create_app
from gateway.auth import issue_token, new_access_key
from gateway.clock import Clock, ManualClock, SystemClock, format_time
from gateway.config import Config, config_from_mapping
from gateway.models import Customer, Message, Number, Target
from gateway.netguard import Resolver, system_resolver
from gateway.runtime import Gateway
from gateway.signing import generate_webhook_secret

JWT_SECRET = "test-jwt-secret-that-is-long-enough-for-hs256"
SANDBOX_SECRET = "test-sandbox-secret"
SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    # uvloop, as `gateway serve` runs; the default loop adds ~40 ms per loopback request here.
    return {"uvloop": uvloop.new_event_loop}


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServedApp:
    """An ASGI app served by uvicorn on a socket of its own, in the test's event loop."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        self.app = app
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


def make_config(db_path: Path, public_url: str, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "server": {"public_url": public_url},
        "database": {"path": str(db_path)},
        "auth": {"jwt_secret": JWT_SECRET},
        "api": {"rate_limit_per_s": 0},  # tests that want limits turn them on
        "webhooks": {"allowed_networks": ["127.0.0.0/8"], "timeout_s": 5, "jitter": 0},
        "carriers": {"sandbox": {"secret": SANDBOX_SECRET, "dlr_delay_s": 0.05}},
        # The normaliser runs in the test's process, so `client` can drain the inbox after each
        # callback (tests of the separate process start `gateway serve`).
        "ingest": {"normaliser_process": False},
    }
    for name, values in sections.items():
        if name == "sandbox":
            raw["carriers"]["sandbox"].update(values)
        elif name == "carriers":  # more carrier sections, e.g. carriers={"twilio": {...}}
            raw["carriers"].update(values)
        else:
            raw.setdefault(name, {}).update(values)
    return config_from_mapping(raw, environ={})


@dataclass
class Tenant:
    customer: Customer
    number: str
    token: str
    access_key: str

    @property
    def id(self) -> str:
        return self.customer.id


class GatewayServer(ServedApp):
    """The gateway under test, with helpers to seed tenants and call its API."""

    def __init__(self, config: Config, sock: socket.socket, app: GatewayApp, clock: Clock) -> None:
        super().__init__(app, sock)
        self.config = config
        self.clock = clock
        # A callback's 2xx means it is in the inbox; the client waits until it is normalised
        # too, so tests see its message as soon as they have their answer.
        self.client = httpx.AsyncClient(
            base_url=self.url, timeout=10.0, event_hooks={"response": [self._settle]}
        )

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.state.gateway
        return gateway

    async def _settle(self, response: httpx.Response) -> None:
        if response.request.url.path.startswith("/hooks/") and response.is_success:
            await self.settled()

    async def settled(self) -> None:
        """Every callback answered so far is normalised."""
        await self.gateway.normaliser.drain()

    async def stop(self) -> None:
        await self.client.aclose()
        await super().stop()

    async def add_tenant(
        self,
        number: str,
        webhook_uri: str = "",
        webhook_method: str = "POST",
        carrier: str = "sandbox",
    ) -> Tenant:
        now = format_time(self.clock.now())
        customer = Customer(
            str(uuid.uuid4()), "tenant", webhook_uri, webhook_method, generate_webhook_secret(), now
        )
        store = self.gateway.store
        await store.create_customer(customer)
        await store.add_number(Number(number, customer.id, carrier, now))
        key, key_hash = new_access_key()
        await store.add_access_key(key_hash, customer.id, now)
        token = issue_token(JWT_SECRET, customer.id, 1.0, self.clock)
        return Tenant(customer, number, token, key)

    async def send(
        self, tenant: Tenant, destinations: list[str], text: str = "hello", **kwargs: Any
    ) -> httpx.Response:
        body = {
            "source": {"type": "tel", "target": tenant.number},
            "destinations": [{"type": "tel", "target": d} for d in destinations],
            "text": text,
        }
        return await self.client.post(
            "/v1.0/messages", params={"token": tenant.token}, json=body, **kwargs
        )


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll an end-to-end condition with a deadline (only where a real server does the work)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 - the work happens in another task or process
            await asyncio.sleep(0.02)


async def event_kinds(server: GatewayServer, message_id: str) -> list[str]:
    """The types of a message's outbox events, oldest first."""
    return [kind for kind, _, _ in await server.gateway.store.outbox_states(message_id)]


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic Authorization header value, as carriers' APIs expect it."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ServerFactory = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """Start gateways on fresh sockets; every one started is stopped at the end."""
    started: list[GatewayServer] = []

    async def start(
        *,
        clock: Clock | None = None,
        run_workers: bool = True,
        resolver: Resolver = system_resolver,
        db_path: Path | None = None,
        **sections: dict[str, Any],
    ) -> GatewayServer:
        sock = free_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = make_config(db_path or tmp_path / "gateway.db", url, **sections)
        clock = clock or SystemClock()
        app = create_app(config, clock=clock, resolver=resolver, run_workers=run_workers)
        server = GatewayServer(config, sock, app, clock)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        if not server.server.should_exit:
            await server.stop()


@pytest.fixture
async def gateway_server(start_gateway: ServerFactory) -> GatewayServer:
    """A gateway with its workers running, on the system clock."""
    return await start_gateway()


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


# Customer endpoints ----------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


@dataclass
class CustomerEndpoint:
    """A real HTTP endpoint on 127.0.0.1 that records requests and answers from a script."""

    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # sent with every answer
    received: list[Received] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    served: ServedApp | None = None

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url + "/hook"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(scope["method"], scope["path"], headers, body))
        self.arrived.set()
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"ok"})

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Poll until `count` requests arrived (end-to-end tests only)."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


@pytest.fixture
async def customer_endpoint() -> AsyncIterator[CustomerEndpoint]:
    endpoint = CustomerEndpoint()
    endpoint.served = ServedApp(endpoint, free_socket())
    await endpoint.served.start()
    yield endpoint
    await endpoint.served.stop()


# Fake carrier APIs ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"


@dataclass
class FakeCarrierApi:
    """A carrier's REST API on 127.0.0.1: records every request, answers from a script."""

    replies: list[Reply] = field(default_factory=list)  # answered in order, then `default`
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    served: ServedApp | None = None

    @property
    def base_url(self) -> str:
        assert self.served is not None
        return self.served.url

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path = scope["path"] + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        self.received.append(Received(scope["method"], path, headers, body))
        reply = self.replies.pop(0) if self.replies else self.default
        await send({"type": "http.response.start", "status": reply.status,
                    "headers": [(b"content-type", reply.content_type.encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": reply.body})


@pytest.fixture
async def fake_carrier_api() -> AsyncIterator[FakeCarrierApi]:
    api = FakeCarrierApi()
    api.served = ServedApp(api, free_socket())
    await api.served.start()
    yield api
    await api.served.stop()


@dataclass
class CarrierRig:
    """A gateway sending through one carrier (dispatcher stepped by hand) and its fake API."""

    server: GatewayServer
    tenant: Tenant
    api: FakeCarrierApi
    destination: str
    text: str  # what `send` sends unless told otherwise

    async def send(self, text: str | None = None) -> str:
        response = await self.server.send(self.tenant, [self.destination], text or self.text)
        assert response.status_code == 200, response.text
        message_id: str = response.json()["id"]
        assert await self.server.gateway.dispatcher.run_once() >= 1
        return message_id

    async def target(self, message_id: str) -> Target:
        message = await self.server.gateway.store.get_message(message_id)
        assert message is not None
        return message.targets[0]

    async def carrier_message_id(self, message_id: str) -> str:
        async with self.server.gateway.store.reading() as tx:
            row = await tx.one(
                "SELECT carrier_message_id FROM targets WHERE message_id = ?", (message_id,)
            )
        assert row is not None
        return str(row["carrier_message_id"])

    async def event_kinds(self, message_id: str) -> list[str]:
        return await event_kinds(self.server, message_id)

    async def messages(self) -> list[Message]:
        return await self.server.gateway.store.list_messages(self.tenant.id, 10, None)
