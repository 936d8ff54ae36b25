"""Assembles a running gateway from its config: store, carriers, services and workers."""

from __future__ import annotations

import asyncio
import logging
from typing import Self

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway import netguard
from gateway.auth import Authenticator
from gateway.carriers.base import Carrier, CarrierContext
from gateway.carriers.registry import build_carriers
from gateway.carriers.sandbox import SandboxSimulator
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.dispatch import Dispatcher
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.ratelimit import TokenBuckets
from gateway.retention import PRUNE_INTERVAL_S, Retention
from gateway.store import Store
from gateway.tracking import Tracker
from gateway.webhook_attempt import Attempter
from gateway.webhooks import WebhookDeliverer
from gateway.workers import Wakeup, run_forever

log = logging.getLogger(__name__)


class Gateway:
    """Everything one gateway process runs; `app.py` serves it over HTTP."""

    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        resolver: netguard.Resolver,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        # httpx's API over aiohttp's transport: sends to carriers ran ~5x faster in `make bench`
        # (httpx's own transport managed ~0.6k POSTs/s on the bench machine). It honours
        # SSL_CERT_FILE / SSL_CERT_DIR but not HTTP(S)_PROXY (README, Configuration).
        self.carrier_http = httpx.AsyncClient(
            follow_redirects=False, transport=AiohttpTransport(trust_env=True)
        )
        self.webhook_http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.webhooks.concurrency),
            # Bounded per attempt by the deliverer; aiohttp's own 5-minute default is off.
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )
        self.dispatch_wakeup = Wakeup()
        self.webhook_wakeup = Wakeup()
        self.carriers: dict[str, Carrier] = {}
        self.simulator: SandboxSimulator | None = None
        self._add_carriers()
        # Callbacks and send results only make webhook events; nothing new to dispatch.
        self.tracker = Tracker(store, clock, config, self.webhook_wakeup.notify)
        self.messages = MessageService(store, clock, config, self.carriers, self._changed)
        self.retention = Retention(store, clock, config.database.retention_days)
        self.auth = Authenticator(store, config.auth.jwt_secret, clock)
        self.rate_limits = TokenBuckets(
            config.api.rate_limit_per_s, config.api.rate_limit_burst, clock
        )
        self.dispatcher = Dispatcher(
            store, self.tracker, self.carriers, clock, config.dispatch, config.server.public_url
        )
        policy = netguard.NetworkPolicy(config.webhooks.allowed_networks)
        attempter = Attempter(self.webhook_http, policy, resolver, config.webhooks.timeout_s)
        self.deliverer = WebhookDeliverer(store, clock, config.webhooks, attempter)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _add_carriers(self) -> None:
        context = CarrierContext(self.carrier_http, self.config.server.public_url, self.clock)
        self.carriers.update(build_carriers(self.config.carriers, context))
        sandbox = self.config.carriers.sandbox
        if sandbox is not None:
            self.simulator = SandboxSimulator(sandbox, self.carrier_http, self.clock)

    @classmethod
    async def open(
        cls,
        config: Config,
        *,
        clock: Clock | None = None,
        resolver: netguard.Resolver = netguard.system_resolver,
    ) -> Self:
        store = await Store.open(config.database.path)
        try:
            return cls(config, store, clock or SystemClock(), resolver)
        except BaseException:
            # An open aiosqlite connection keeps a non-daemon thread: close it or never exit.
            await store.close()
            raise

    def _changed(self) -> None:
        self.dispatch_wakeup.notify()
        self.webhook_wakeup.notify()

    async def start_workers(self) -> None:
        await self.store.release_leases()
        self._tasks["dispatch"] = asyncio.create_task(
            run_forever(
                "dispatch",
                self.dispatcher.run_once,
                self.dispatch_wakeup,
                self.config.dispatch.poll_interval_s,
            )
        )
        self._tasks["webhooks"] = asyncio.create_task(
            self.deliverer.serve(self.webhook_wakeup, self.config.webhooks.poll_interval_s)
        )
        self._tasks["retention"] = asyncio.create_task(
            run_forever("retention", self.retention.run_once, Wakeup(), PRUNE_INTERVAL_S)
        )

    def stopped_workers(self) -> list[str]:
        """Names of workers that should run but do not (crashed)."""
        return [name for name, task in self._tasks.items() if task.done()]

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.deliverer.close()
        if self.simulator is not None:
            await self.simulator.close()
        await self.carrier_http.aclose()
        await self.webhook_http.close()
        await self.store.close()
