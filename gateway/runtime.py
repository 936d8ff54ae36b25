"""Assembles a running gateway from its config: store, carriers, services and workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Self

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway import netguard
from gateway.auth import Authenticator
from gateway.carriers.base import Carrier, CarrierContext
from gateway.carriers.registry import build_carriers
from gateway.carriers.sandbox import SandboxSimulator
from gateway.changes import Outcome
from gateway.clock import Clock, SystemClock
from gateway.config import Config
from gateway.dispatch import Dispatcher
from gateway.ingest import TIDY_INTERVAL_S, CallbackInbox
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.normaliser import POLL_INTERVAL_S, Normaliser, Outcomes
from gateway.normaliser_process import NormaliserProcess, Report, runs_apart
from gateway.ratelimit import TokenBuckets
from gateway.retention import PRUNE_INTERVAL_S, Retention
from gateway.store import Store
from gateway.store.inbox import Inbox, inbox_path
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
        inbox: Inbox,
        clock: Clock,
        resolver: netguard.Resolver,
    ) -> None:
        self.config = config
        self.store = store
        self.inbox = inbox
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
        # Callbacks: committed to the inbox and answered here; normalised by the normaliser, in
        # a process of its own or (normaliser_process = false) as a task of this one. This
        # process's Normaliser also serves `drain` (tests) in the second case.
        self.normaliser_wakeup = Wakeup()
        self.normaliser = Normaliser(store, inbox, self.tracker, clock, self._count_outcomes)
        self.normaliser_process: NormaliserProcess | None = None
        if runs_apart(config):
            self.normaliser_process = NormaliserProcess(config, self._on_report)
        self.callbacks = CallbackInbox(
            inbox, store, clock, config.ingest.max_backlog, self._callbacks_appended
        )
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
        inbox: Inbox | None = None
        try:
            inbox = await Inbox.open(inbox_path(config.database.path))
            if runs_apart(config):
                await inbox.leave_checkpoints_to_reader()
                await store.leave_checkpoints_to_checkpointer()
            await inbox.ids_after(await store.inbox_applied_through())
            return cls(config, store, inbox, clock or SystemClock(), resolver)
        except BaseException:
            # An open aiosqlite connection keeps a non-daemon thread: close it or never exit.
            if inbox is not None:
                await inbox.close()
            await store.close()
            raise

    def _changed(self) -> None:
        self.dispatch_wakeup.notify()
        self.webhook_wakeup.notify()

    def _callbacks_appended(self) -> None:
        if self.normaliser_process is not None:
            self.normaliser_process.notify()
        else:
            self.normaliser_wakeup.notify()

    def _count_outcomes(self, outcomes: Outcomes) -> None:
        for (carrier, outcome), count in outcomes.items():
            self.metrics.count_callback(carrier, outcome, count)
            if outcome == Outcome.APPLIED:  # the one outcome that queues webhook events now
                self.webhook_wakeup.notify()

    def _on_report(self, report: Report) -> None:
        self._count_outcomes(
            Outcomes({(carrier, outcome): count for carrier, outcome, count in report.outcomes})
        )

    async def start_workers(self) -> None:
        await self.store.release_leases()
        if self.normaliser_process is not None:
            self._tasks["normaliser"] = self.normaliser_process.start()
        else:
            self._tasks["normaliser"] = asyncio.create_task(
                run_forever(
                    "normaliser", self.normaliser.run_once, self.normaliser_wakeup, POLL_INTERVAL_S
                )
            )
        self._tasks["inbox"] = asyncio.create_task(
            run_forever("inbox", self.callbacks.tidy, Wakeup(), TIDY_INTERVAL_S)
        )
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
        stopped = [name for name, task in self._tasks.items() if task.done()]
        process = self.normaliser_process
        if process is not None and "normaliser" in self._tasks and not process.running:
            stopped.append("normaliser process")
        return stopped

    async def close(self) -> None:
        """Stop everything. A step that fails is logged and the rest still run: a database
        connection left open keeps a thread that would stop the process from exiting."""
        steps: list[Callable[[], Awaitable[object]]] = [self._stop_workers, self.deliverer.close]
        if self.simulator is not None:
            steps.append(self.simulator.close)
        steps += [self.carrier_http.aclose, self.webhook_http.close, self.inbox.close]
        for step in [*steps, self.store.close]:
            try:
                await step()
            except Exception:
                log.exception("shutdown: %s failed", getattr(step, "__qualname__", step))

    async def _stop_workers(self) -> None:
        if self.normaliser_process is not None:
            await self.normaliser_process.close()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
