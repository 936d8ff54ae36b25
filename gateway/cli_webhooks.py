"""Operator commands for webhook delivery: the attempt log, resend, recover, endpoint health."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

from gateway import deliveries
from gateway.cli_common import CommandError, print_json, require_customer, with_store
from gateway.clock import SystemClock, format_time, later
from gateway.config import Config
from gateway.signing import generate_webhook_secret
from gateway.store import DeliveryLog, Store


async def cmd_webhooks_list(config: Config, args: argparse.Namespace) -> None:
    message_id = _uuid(args.message, "--message")

    async def work(store: Store) -> None:
        if await store.get_message(message_id) is None:
            raise CommandError(f"no message with id {message_id}")
        print_json(await deliveries.of_message(store, message_id))

    await with_store(config, work)


async def cmd_webhooks_resend(config: Config, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        count = await store.requeue_message_events(args.message, format_time(SystemClock().now()))
        if count == 0:
            raise CommandError(f"message {args.message} has no webhook events to resend")
        print_json({"message_id": args.message, "events_queued": count})

    await with_store(config, work)


async def cmd_webhooks_recover(config: Config, args: argparse.Namespace) -> None:
    try:
        since = deliveries.parse_since(args.since)
    except ValueError as exc:
        raise CommandError(f"--since: {exc}") from exc
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1")

    def progress(done: int, total: int) -> None:
        # stderr: stdout stays one JSON document for scripts.
        sys.stderr.write(f"recovered {done}/{total}\n")
        sys.stderr.flush()

    async def work(store: Store) -> None:
        if args.customer is not None:
            await require_customer(store, args.customer)
        recovered = await deliveries.recover(
            store,
            since,
            SystemClock().now(),
            args.customer,
            batch_size=args.batch_size,
            on_batch=progress,
        )
        print_json({"recovered": recovered})

    await with_store(config, work)


async def cmd_customers_show(config: Config, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        customer = await store.get_customer(args.customer)
        if customer is None:
            raise CommandError(f"no customer with id {args.customer}")
        print_json(customer)

    await with_store(config, work)


async def cmd_customers_enable_webhooks(config: Config, args: argparse.Namespace) -> None:
    async def work(store: Store) -> None:
        customer = await DeliveryLog(store).enable_webhooks(args.customer)
        if customer is None:
            raise CommandError(f"no customer with id {args.customer}")
        print_json(customer)

    await with_store(config, work)


async def cmd_customers_rotate_secret(config: Config, args: argparse.Namespace) -> None:
    if args.grace_hours < 0:
        raise CommandError("--grace-hours must not be negative")

    async def work(store: Store) -> None:
        expires = later(SystemClock().now(), args.grace_hours * 3600)
        customer = await store.rotate_webhook_secret(
            args.customer, generate_webhook_secret(), expires
        )
        if customer is None:
            raise CommandError(f"no customer with id {args.customer}")
        print_json(customer)

    await with_store(config, work)


def _uuid(raw: str, option: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise CommandError(f"{option} must be a message id (UUID), not {raw!r}") from exc


# Parser ----------------------------------------------------------------------------------------


def add_webhook_commands(groups: Any, common: argparse.ArgumentParser) -> None:
    webhooks = groups.add_parser("webhooks", help="customer webhook deliveries").add_subparsers(
        dest="action", required=True
    )
    listing = webhooks.add_parser(
        "list", parents=[common], help="a message's deliveries with their attempts"
    )
    listing.add_argument("--message", required=True)
    listing.set_defaults(run=cmd_webhooks_list)
    resend = webhooks.add_parser(
        "resend", parents=[common], help="deliver a message's events again"
    )
    resend.add_argument("--message", required=True)
    resend.set_defaults(run=cmd_webhooks_resend)
    _add_recover(webhooks, common)


def _add_recover(webhooks: Any, common: argparse.ArgumentParser) -> None:
    recover = webhooks.add_parser(
        "recover", parents=[common], help="deliver again every delivery that failed since TIME"
    )
    recover.add_argument(
        "--since",
        required=True,
        metavar="TIME",
        help="UTC 'YYYY-MM-DD HH:MM:SS[.ffffff]' or ISO 8601",
    )
    recover.add_argument("--customer", metavar="ID", help="only this customer's deliveries")
    recover.add_argument(
        "--batch-size",
        type=int,
        default=deliveries.RECOVER_BATCH,
        help=f"deliveries requeued per transaction and progress line (default "
        f"{deliveries.RECOVER_BATCH})",
    )
    recover.set_defaults(run=cmd_webhooks_recover)


def add_customer_commands(customers: Any, common: argparse.ArgumentParser) -> None:
    show = customers.add_parser(
        "show", parents=[common], help="a customer, with its webhook endpoint's health"
    )
    show.add_argument("--customer", required=True)
    show.set_defaults(run=cmd_customers_show)
    enable = customers.add_parser(
        "enable-webhooks", parents=[common], help="re-enable a disabled webhook endpoint"
    )
    enable.add_argument("--customer", required=True)
    enable.set_defaults(run=cmd_customers_enable_webhooks)
    rotate = customers.add_parser(
        "rotate-secret", parents=[common],
        help="a new webhook secret; the old one keeps signing alongside it for the grace period",
    )  # fmt: skip
    rotate.add_argument("--customer", required=True)
    rotate.add_argument("--grace-hours", type=float, default=24.0)
    rotate.set_defaults(run=cmd_customers_rotate_secret)
