"""What every `gateway` command shares: its error, JSON output and a store opened for one run."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from gateway.config import Config
from gateway.errors import GatewayError
from gateway.store import Store


class CommandError(GatewayError):
    """A command cannot do what was asked; the message says why. Exit code 1."""


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


async def with_store(config: Config, work: Callable[[Store], Awaitable[None]]) -> None:
    store = await Store.open(config.database.path)
    try:
        await work(store)
    finally:
        await store.close()


async def require_customer(store: Store, customer_id: str) -> None:
    if await store.get_customer(customer_id) is None:
        raise CommandError(f"no customer with id {customer_id}")
