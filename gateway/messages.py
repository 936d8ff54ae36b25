"""Customer use cases, no HTTP: send, list, get and delete messages."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Collection

import msgspec

from gateway import events, jsonbody, segments
from gateway.clock import NEVER, Clock, format_time, later, parse_time
from gateway.config import Config
from gateway.errors import AlreadyExists, InvalidArgument, NotFound
from gateway.group_commit import GroupTransactor
from gateway.ids import new_message_id
from gateway.models import (
    Address,
    Direction,
    EventType,
    Message,
    MessagePage,
    Target,
    TargetStatus,
)
from gateway.store import Store, Tx

E164 = re.compile(r"\+[1-9][0-9]{6,14}")  # used with fullmatch: "$" would allow a final "\n"
MAX_DESTINATIONS = 100
MAX_TEXT_CHARS = 1600
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 10


class AddressIn(msgspec.Struct, frozen=True):
    """An address as clients send it: every field optional, `type` "" or absent means tel."""

    type: str = "tel"
    target: str = ""
    target_name: str = ""
    name: str = ""
    detail: str = ""


class SendRequest(msgspec.Struct, frozen=True):
    source: AddressIn
    destinations: list[AddressIn]
    text: str


_send_decoder = msgspec.json.Decoder(SendRequest)


def parse_send_request(body: bytes) -> tuple[SendRequest, str]:
    """The typed request and a hash of its JSON value (for Idempotency-Key comparison)."""
    try:
        request = jsonbody.decode(_send_decoder, body)
        body_hash = jsonbody.value_hash(body)
    except jsonbody.WrongShape as exc:
        raise InvalidArgument("INVALID_ARGUMENT", f"invalid request body: {exc}") from exc
    except jsonbody.NotJson as exc:
        raise InvalidArgument(
            "INVALID_JSON_BODY", f"request body is not valid JSON: {exc}"
        ) from exc
    _reject_lone_surrogates(request)
    return request, body_hash


def _reject_lone_surrogates(request: SendRequest) -> None:
    # JSON may spell a lone surrogate as an escape; such text cannot be stored or sent as UTF-8.
    fields = [request.text, *_strings(request.source)]
    for destination in request.destinations:
        fields += _strings(destination)
    for value in fields:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgument(
                "INVALID_JSON_BODY", "request body holds invalid Unicode (a lone surrogate)"
            ) from exc


def _strings(address: AddressIn) -> list[str]:
    return [address.type, address.target, address.target_name, address.name, address.detail]


def _tel_address(address: AddressIn, field: str) -> Address:
    if address.type not in ("", "tel"):
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"{field}.type must be 'tel': only phone numbers can be texted"
        )
    if not E164.fullmatch(address.target):
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"{field}.target must be an E.164 number like +15551234567"
        )
    return Address("tel", address.target, address.target_name, address.name, address.detail)


def _validate(request: SendRequest) -> tuple[Address, list[Address]]:
    source = _tel_address(request.source, "source")
    if not 1 <= len(request.destinations) <= MAX_DESTINATIONS:
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"destinations must hold 1 to {MAX_DESTINATIONS} addresses"
        )
    destinations = [
        _tel_address(d, f"destinations[{i}]") for i, d in enumerate(request.destinations)
    ]
    if not request.text:
        raise InvalidArgument("INVALID_ARGUMENT", "text must not be empty")
    if len(request.text) > MAX_TEXT_CHARS:
        raise InvalidArgument(
            "INVALID_ARGUMENT", f"text is longer than {MAX_TEXT_CHARS} characters"
        )
    return source, destinations


def parse_page_token(token: str) -> tuple[str, str | None] | None:
    """`tm_create|id` as this gateway issues, or a plain tm_create as VoIPBIN clients build."""
    if not token:
        return None
    tm_create, _, message_id = token.partition("|")
    try:
        # Compared as text in the store, so both parts are put in their one canonical form.
        tm_create = format_time(parse_time(tm_create))
        return tm_create, str(uuid.UUID(message_id)) if message_id else None
    except ValueError as exc:
        raise InvalidArgument(
            "INVALID_REQUEST_PARAMETER", "page_token must be a next_page_token or a tm_create time"
        ) from exc


def parse_page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError as exc:
        raise InvalidArgument("INVALID_REQUEST_PARAMETER", "page_size must be an integer") from exc
    if size < 1:
        raise InvalidArgument("INVALID_REQUEST_PARAMETER", "page_size must be at least 1")
    return min(size, MAX_PAGE_SIZE)


def parse_message_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise InvalidArgument("INVALID_ID", "message id must be a UUID") from exc


class MessageService:
    """Send, list, get and delete a customer's messages."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        config: Config,
        configured_carriers: Collection[str],
        on_commit: Callable[[], None],
    ) -> None:
        self._store = store
        self._clock = clock
        self._config = config
        self._carriers = configured_carriers
        self._on_commit = on_commit
        # Sends and deletes arriving together share one transaction and disk sync; a refused one
        # (unknown id, reused Idempotency-Key) is common enough to give each its own savepoint.
        self._writes = GroupTransactor(store, expect_failures=True)

    async def send(
        self, customer_id: str, request: SendRequest, body_hash: str, idempotency_key: str | None
    ) -> Message:
        source, destinations = _validate(request)
        number = await self._store.get_number(source.target)
        if number is None or number.customer_id != customer_id:
            raise InvalidArgument("SOURCE_NOT_OWNED", f"{source.target} is not a number you own")
        if number.carrier not in self._carriers:
            raise InvalidArgument(
                "CARRIER_NOT_CONFIGURED",
                f"{source.target} uses carrier '{number.carrier}', which is not configured",
            )
        now = self._clock.now()
        message = _new_outbound(
            customer_id, source, destinations, request.text, number.carrier, now
        )

        async def work(tx: Tx) -> Message:
            if idempotency_key:
                existing = await self._replay(tx, customer_id, idempotency_key, body_hash, message)
                if existing is not None:
                    return existing
            await tx.insert_message(
                message,
                next_send_at=format_time(now),
                send_deadline_at=later(now, self._config.dispatch.send_deadline_s),
            )
            await self._notify(tx, EventType.MESSAGE_CREATED, message, format_time(now))
            return message

        stored = await self._writes.run(work)
        self._on_commit()
        return stored

    async def _replay(
        self, tx: Tx, customer_id: str, key: str, body_hash: str, message: Message
    ) -> Message | None:
        held = await tx.claim_idempotency_key(
            customer_id, key, body_hash, message.id, message.tm_create
        )
        if held is None:
            return None
        held_hash, held_message_id = held
        if held_hash != body_hash:
            raise AlreadyExists(
                "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with another request body"
            )
        existing = await tx.get_message(held_message_id)
        if existing is None:  # pragma: no cover - keys are only written with their message
            raise NotFound("MESSAGE_NOT_FOUND", "the message of this Idempotency-Key is gone")
        return existing

    async def _notify(self, tx: Tx, event_type: EventType, message: Message, now: str) -> None:
        await events.notify(tx, event_type, message, now)

    async def list(self, customer_id: str, page_size: int, page_token: str) -> MessagePage:
        before = parse_page_token(page_token)
        rows = await self._store.list_messages(customer_id, page_size + 1, before)
        page = rows[:page_size]
        more = len(rows) > page_size
        token = f"{page[-1].tm_create}|{page[-1].id}" if page and more else ""
        return MessagePage(result=tuple(page), next_page_token=token)

    async def get(self, customer_id: str, message_id: str) -> Message:
        message = await self._store.get_message(parse_message_id(message_id))
        if message is None or message.customer_id != customer_id or message.tm_delete != NEVER:
            raise NotFound("MESSAGE_NOT_FOUND", "no such message")
        return message

    async def delete(self, customer_id: str, message_id: str) -> Message:
        message_id = parse_message_id(message_id)
        now = format_time(self._clock.now())

        async def work(tx: Tx) -> Message:
            message = await tx.get_message(message_id)
            if message is None or message.customer_id != customer_id or message.tm_delete != NEVER:
                raise NotFound("MESSAGE_NOT_FOUND", "no such message")
            await tx.mark_deleted(message_id, now)
            deleted = msgspec.structs.replace(message, tm_update=now, tm_delete=now)
            await self._notify(tx, EventType.MESSAGE_DELETED, deleted, now)
            return deleted

        deleted = await self._writes.run(work)
        self._on_commit()
        return deleted


def _new_outbound(
    customer_id: str,
    source: Address,
    destinations: list[Address],
    text: str,
    carrier: str,
    now: dt.datetime,
) -> Message:
    tm_create = format_time(now)
    parts = segments.count_parts(text)
    targets = tuple(
        Target(destination=d, status=TargetStatus.QUEUED, parts=parts, carrier=carrier)
        for d in destinations
    )
    return Message(
        id=new_message_id(),
        customer_id=customer_id,
        type="sms",
        source=source,
        targets=targets,
        text=text,
        direction=Direction.OUTBOUND,
        tm_create=tm_create,
    )
