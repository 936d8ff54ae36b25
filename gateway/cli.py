"""The `gateway` command line; the only place that starts uvicorn. Output for scripts is JSON."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from gateway import logs, netguard
from gateway.auth import issue_token, new_access_key
from gateway.carriers.sandbox import SIGNATURE_HEADER, InboundEvent, signed_callback
from gateway.cli_common import CommandError, print_json, require_customer, with_store
from gateway.cli_webhooks import add_customer_commands, add_webhook_commands
from gateway.clock import SystemClock, format_time
from gateway.config import CarriersConfig, Config, load_config
from gateway.errors import (
    ConfigError,
    OwnershipConflict,
    StoreError,
    WebhookAddressBlocked,
)
from gateway.messages import E164
from gateway.models import Customer, Number
from gateway.signing import generate_webhook_secret
from gateway.store import Store

WEBHOOK_METHODS = ("POST", "PUT", "GET", "DELETE")


# Commands --------------------------------------------------------------------------------------


def cmd_serve(config: Config, args: argparse.Namespace) -> None:
    import uvicorn  # imported here: only `serve` needs the server

    from gateway.app import create_app
    from gateway.gc_tuning import tune_for_serving

    logs.configure()
    if not config.auth.jwt_secret:
        logging.warning(
            "auth.jwt_secret is not set: JWT logins are refused, access keys still work"
        )
    app = create_app(config)
    tune_for_serving()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_config=None,
            host=config.server.host,
            port=config.server.port,
            lifespan="on",
            access_log=config.server.access_log,
            log_level="info",
        )
    )
    server.run()


async def cmd_customers_create(config: Config, args: argparse.Namespace) -> None:
    method = args.webhook_method.upper()
    if method not in WEBHOOK_METHODS:
        raise CommandError(f"--webhook-method must be one of {', '.join(WEBHOOK_METHODS)}")
    if args.webhook_uri:
        policy = netguard.NetworkPolicy(config.webhooks.allowed_networks)
        await netguard.pin(args.webhook_uri, policy)
    customer = Customer(
        id=str(uuid.uuid4()),
        name=args.name,
        webhook_uri=args.webhook_uri or "",
        webhook_method=method,
        webhook_secret=generate_webhook_secret(),
        tm_create=format_time(SystemClock().now()),
    )

    async def work(store: Store) -> None:
        await store.create_customer(customer)

    await with_store(config, work)
    print_json(customer)


async def cmd_customers_list(config: Config, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        print_json(await store.list_customers())

    await with_store(config, work)


async def cmd_numbers_add(config: Config, args: argparse.Namespace) -> None:
    if not E164.fullmatch(args.number):
        raise CommandError("--number must be E.164, like +15551234567")
    carriers = CarriersConfig.__struct_fields__  # every carrier has a config section
    if args.carrier not in carriers:
        raise CommandError(f"--carrier must be one of {', '.join(carriers)}")
    number = Number(args.number, args.customer, args.carrier, format_time(SystemClock().now()))

    async def work(store: Store) -> None:
        await require_customer(store, args.customer)
        await store.add_number(number)

    await with_store(config, work)
    print_json(number)


async def cmd_tokens_issue(config: Config, args: argparse.Namespace) -> None:
    if not config.auth.jwt_secret:
        raise CommandError("auth.jwt_secret is not set in the config, so no token can be issued")

    async def work(store: Store) -> None:
        await require_customer(store, args.customer)

    await with_store(config, work)
    ttl_hours = config.auth.default_token_ttl_hours if args.ttl_hours is None else args.ttl_hours
    if ttl_hours <= 0:
        raise CommandError("--ttl-hours must be more than 0")
    sys.stdout.write(
        issue_token(config.auth.jwt_secret, args.customer, ttl_hours, SystemClock()) + "\n"
    )


async def cmd_accesskeys_create(config: Config, args: argparse.Namespace) -> None:
    key, key_hash = new_access_key()

    async def work(store: Store) -> None:
        await require_customer(store, args.customer)
        await store.add_access_key(key_hash, args.customer, format_time(SystemClock().now()))

    await with_store(config, work)
    sys.stdout.write(key + "\n")


async def cmd_sandbox_inbound(config: Config, args: argparse.Namespace) -> None:
    sandbox = config.carriers.sandbox
    if sandbox is None or not sandbox.secret:
        raise CommandError("[carriers.sandbox] secret is not configured")
    event = InboundEvent(
        id=f"sbx_in_{uuid.uuid4().hex}", from_=args.from_, to=args.to, text=args.text
    )
    body, signature = signed_callback(sandbox.secret, event, time.time())
    url = config.server.public_url.rstrip("/") + "/hooks/sandbox"
    try:
        async with httpx.AsyncClient() as client:
            response = await client.post(
                url,
                content=body,
                timeout=10.0,
                headers={SIGNATURE_HEADER: signature, "content-type": "application/json"},
            )
    except httpx.HTTPError as exc:
        raise CommandError(
            f"no gateway answered at {url} ({type(exc).__name__}); is `gateway serve` running?"
        ) from exc
    if not response.is_success:
        raise CommandError(f"the gateway refused the SMS: {response.status_code} {response.text}")
    print_json({"id": event.id, "from": args.from_, "to": args.to, "status": "accepted"})


# Parser ----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file (default: ./config.toml, else built-in defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="gateway", parents=[common], description="SMS webhook gateway (VoIPBIN-compatible)"
    )
    groups = parser.add_subparsers(dest="command", required=True)
    groups.add_parser("serve", parents=[common], help="run the server").set_defaults(run=cmd_serve)
    _customer_commands(groups, common)
    _other_commands(groups, common)
    return parser


def _customer_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    customers = groups.add_parser("customers", help="manage customers").add_subparsers(
        dest="action", required=True
    )
    create = customers.add_parser("create", parents=[common], help="create a customer")
    create.add_argument("--name", required=True)
    create.add_argument("--webhook-uri", default="")
    create.add_argument("--webhook-method", default="POST")
    create.set_defaults(run=cmd_customers_create)
    customers.add_parser("list", parents=[common]).set_defaults(run=cmd_customers_list)
    add_customer_commands(customers, common)
    numbers = groups.add_parser("numbers", help="manage numbers").add_subparsers(
        dest="action", required=True
    )
    add = numbers.add_parser("add", parents=[common], help="give a number to a customer")
    add.add_argument("--customer", required=True)
    add.add_argument("--number", required=True)
    add.add_argument("--carrier", required=True)
    add.set_defaults(run=cmd_numbers_add)


def _other_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    tokens = groups.add_parser("tokens").add_subparsers(dest="action", required=True)
    issue = tokens.add_parser("issue", parents=[common], help="print a JWT for a customer")
    issue.add_argument("--customer", required=True)
    issue.add_argument("--ttl-hours", type=float, default=None)
    issue.set_defaults(run=cmd_tokens_issue)
    keys = groups.add_parser("accesskeys").add_subparsers(dest="action", required=True)
    keys_create = keys.add_parser("create", parents=[common], help="print a new access key")
    keys_create.add_argument("--customer", required=True)
    keys_create.set_defaults(run=cmd_accesskeys_create)
    sandbox = groups.add_parser("sandbox").add_subparsers(dest="action", required=True)
    inbound = sandbox.add_parser("inbound", parents=[common], help="inject an inbound SMS")
    inbound.add_argument("--from", dest="from_", required=True)
    inbound.add_argument("--to", required=True)
    inbound.add_argument("--text", required=True)
    inbound.set_defaults(run=cmd_sandbox_inbound)
    add_webhook_commands(groups, common)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None))
        if args.run is cmd_serve:
            cmd_serve(config, args)
        else:
            asyncio.run(args.run(config, args))
    except (CommandError, ConfigError, OwnershipConflict, StoreError, WebhookAddressBlocked) as exc:
        sys.stderr.write(f"gateway: {exc}\n")
        return 1
    return 0
