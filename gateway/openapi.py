"""The OpenAPI 3.1 description of every endpoint; schemas come from the msgspec Structs."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from gateway.carriers.sandbox import SubmitRequest, SubmitResponse
from gateway.deliveries import STATES, Delivery, DeliveryDetail, DeliveryPage
from gateway.messages import MAX_DESTINATIONS, MAX_TEXT_CHARS, SendRequest
from gateway.models import ErrorEnvelope, MessagePage, WebhookEvent

_REF = "#/components/schemas/{name}"
E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
_TIME = (
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"\.[0-9]{6}"
)  # days 29-31 left out so every string the pattern admits is a real date
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PAGE_TOKEN_PATTERN = rf"^$|^{_TIME}(\|{_UUID})?$"
DELIVERY_ID_PATTERN = r"^msg_[0-9a-f]{32}$"
DELIVERY_PAGE_TOKEN_PATTERN = rf"^$|^{_TIME}(\|msg_[0-9a-f]{{32}})?$"

_AUTH: list[dict[str, list[str]]] = [
    {"token": []},
    {"bearer": []},
    {"cookie": []},
    {"accesskey": []},
]

_ERRORS = {
    "400": "INVALID_ARGUMENT: INVALID_JSON_BODY, INVALID_ARGUMENT, INVALID_ID, "
    "INVALID_REQUEST_PARAMETER, SOURCE_NOT_OWNED, CARRIER_NOT_CONFIGURED",
    "401": "UNAUTHENTICATED: AUTHENTICATION_REQUIRED, INVALID_CREDENTIALS",
    "404": "NOT_FOUND: MESSAGE_NOT_FOUND, DELIVERY_NOT_FOUND, NOT_FOUND",
    "409": "ALREADY_EXISTS: IDEMPOTENCY_KEY_REUSED",
    "413": "INVALID_ARGUMENT: BODY_TOO_LARGE",
    "429": "RESOURCE_EXHAUSTED: RATE_LIMIT_EXCEEDED (with a Retry-After header)",
    "503": "UNAVAILABLE: DATABASE_UNAVAILABLE",
}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(name=schema_name)}}},
    }


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _json("ErrorEnvelope", _ERRORS[code]) for code in codes}


def _param(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": where, "description": description, "schema": schema}


_ID = _param("id", "path", "Message id (UUID)", {"type": "string", "format": "uuid"})

_DELIVERY_ID = _param(
    "id",
    "path",
    "Delivery id: the event's webhook-id",
    {"type": "string", "pattern": DELIVERY_ID_PATTERN},
)
_PAGE_SIZE = _param(
    "page_size",
    "query",
    "1-100, default 10; above 100 is treated as 100",
    {"type": "integer", "minimum": 1},
)

_CARRIER = _param("carrier", "path", "the carrier's name, e.g. sandbox", {"type": "string"})
_HOOK_RESPONSES = {
    "200": {"description": "Stored in the inbox; normalised into messages right after"},
    "403": _json("ErrorEnvelope", "PERMISSION_DENIED: INVALID_SIGNATURE"),
    "404": _json("ErrorEnvelope", "NOT_FOUND: CARRIER_NOT_FOUND"),
    **_errors("400", "413"),
    "503": _json(
        "ErrorEnvelope",
        "UNAVAILABLE: DATABASE_UNAVAILABLE, or INBOX_FULL when too many callbacks wait "
        "([ingest] max_backlog); carriers retry",
    ),
}

_PATHS: dict[str, Any] = {
    "/v1.0/messages": {
        "post": {
            "summary": "Send an SMS to one or more destinations",
            "description": "Every target starts `queued`; the carrier of the source number is "
            "called after the answer. An `Idempotency-Key` header makes the send safe to retry.",
            "security": _AUTH,
            "parameters": [
                _param(
                    "Idempotency-Key",
                    "header",
                    "Same key + same body returns the first message; another body is 409",
                    {"type": "string", "maxLength": 255},
                ),
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(name="SendRequest")}}
                },
            },
            "responses": {
                "200": _json("Message", "The created message"),
                **_errors("400", "401", "409", "413", "429", "503"),
            },
        },
        "get": {
            "summary": "List the caller's messages, newest first",
            "security": _AUTH,
            "parameters": [
                _PAGE_SIZE,
                _param(
                    "page_token",
                    "query",
                    "next_page_token of the previous page, or a "
                    "tm_create time: lists messages created before it",
                    {"type": "string", "pattern": PAGE_TOKEN_PATTERN},
                ),
            ],
            "responses": {
                "200": _json("MessagePage", "One page"),
                **_errors("400", "401", "429", "503"),
            },
        },
    },
    "/v1.0/messages/{id}": {
        "get": {
            "summary": "Get one message",
            "security": _AUTH,
            "parameters": [_ID],
            "responses": {
                "200": _json("Message", "The message"),
                **_errors("400", "401", "404", "429", "503"),
            },
        },
        "delete": {
            "summary": "Delete a message (soft: tm_delete is set; carrier reports still apply)",
            "security": _AUTH,
            "parameters": [_ID],
            "responses": {
                "200": _json("Message", "The deleted message"),
                **_errors("400", "401", "404", "429", "503"),
            },
        },
    },
    "/v1.0/webhook_deliveries": {
        "get": {
            "summary": "List the caller's webhook deliveries (one per event), newest first",
            "security": _AUTH,
            "parameters": [
                _PAGE_SIZE,
                _param(
                    "page_token",
                    "query",
                    "next_page_token of the previous page, or a tm_create time",
                    {"type": "string", "pattern": DELIVERY_PAGE_TOKEN_PATTERN},
                ),
                _param(
                    "message_id",
                    "query",
                    "Only this message's",
                    {"type": "string", "format": "uuid"},
                ),
                _param(
                    "state", "query", "Only in this state", {"type": "string", "enum": list(STATES)}
                ),
            ],
            "responses": {
                "200": _json("DeliveryPage", "One page"),
                **_errors("400", "401", "429", "503"),
            },
        },
    },
    "/v1.0/webhook_deliveries/{id}": {
        "get": {
            "summary": "Get one delivery with its attempt log, oldest attempt first",
            "security": _AUTH,
            "parameters": [_DELIVERY_ID],
            "responses": {
                "200": _json("DeliveryDetail", "The delivery and its attempts"),
                **_errors("400", "401", "404", "429", "503"),
            },
        },
    },
    "/v1.0/webhook_deliveries/{id}/resend": {
        "post": {
            "summary": "Deliver the event again, now, with the same webhook-id",
            "description": "The delivery becomes `pending` and due at once; its attempts are "
            "logged with trigger `manual`. A failed delivery gets one more attempt, a pending one "
            "continues its schedule. Deliveries to a disabled endpoint wait until it is enabled.",
            "security": _AUTH,
            "parameters": [_DELIVERY_ID],
            "responses": {
                "200": _json("Delivery", "The delivery, now pending"),
                **_errors("400", "401", "404", "429", "503"),
            },
        },
    },
    "/hooks/{carrier}": {
        "post": {
            "summary": "Carrier callback: inbound SMS or delivery report",
            "description": "Verified with the carrier's own signature scheme and stored before the "
            "2xx answer. Sandbox: JSON tagged by `event` (`inbound` | `status`), signed with "
            '`X-Sandbox-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`.',
            "parameters": [_CARRIER],
            "responses": _HOOK_RESPONSES,
        },
        "get": {
            "summary": "Carrier callback sent as a GET with query parameters",
            "description": "For carriers that can be set to call with GET (e.g. Vonage); "
            "verified and stored like the POST form.",
            "parameters": [_CARRIER],
            "responses": _HOOK_RESPONSES,
        },
    },
    "/sandbox/v1/messages": {
        "post": {
            "summary": "The sandbox carrier's simulated carrier API (what the dispatcher calls)",
            "description": "Takes one SMS and, `dlr_delay_s` later, POSTs a signed delivery "
            "report to `status_callback`. Authenticated with `Authorization: Bearer <sandbox "
            "secret>`. 404 when the sandbox is not configured.",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(name="SubmitRequest")}}
                },
            },
            "responses": {
                "200": _json("SubmitResponse", "Accepted"),
                "400": _json("ErrorEnvelope", "INVALID_ARGUMENT: INVALID_ARGUMENT"),
                "401": _json("ErrorEnvelope", "UNAUTHENTICATED: INVALID_CREDENTIALS"),
                "404": _json("ErrorEnvelope", "NOT_FOUND: NOT_FOUND"),
            },
        },
    },
    "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Serving"}}}},
    "/readyz": {
        "get": {
            "summary": "Readiness: database answers and workers run",
            "responses": {
                "200": {"description": "Ready"},
                "503": _json("ErrorEnvelope", "DATABASE_UNAVAILABLE or WORKER_STOPPED"),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {"description": "Text exposition format", "content": {"text/plain": {}}}
            },
        }
    },
    "/openapi.json": {
        "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
    },
}


_SCHEMA_TYPES = (
    MessagePage,
    SendRequest,
    ErrorEnvelope,
    WebhookEvent,
    SubmitRequest,
    SubmitResponse,
    DeliveryPage,
    Delivery,
    DeliveryDetail,
)


@functools.cache
def spec() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(_SCHEMA_TYPES, ref_template=_REF)
    _document_send_rules(components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "SMS webhook gateway",
            "version": "0.1.0",
            "description": "VoIPBIN-compatible Message API. Customer webhooks carry "
            "`WebhookEvent` bodies signed with X-VoIPBIN-Signature and Standard Webhooks headers. "
            "Target extra fields (beyond VoIPBIN): `carrier`, `carrier_status`, `error_code`.",
        },
        "paths": _PATHS,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "query", "name": "token"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "token"},
                "accesskey": {"type": "apiKey", "in": "query", "name": "accesskey"},
            },
        },
    }


def _document_send_rules(components: dict[str, Any]) -> None:
    """The rules messages.py checks by hand (for clearer messages), stated in the schema too."""
    address = components["AddressIn"]["properties"]
    address["type"]["enum"] = ["", "tel"]
    address["target"]["pattern"] = E164_PATTERN
    components["AddressIn"]["required"] = ["target"]
    send = components["SendRequest"]["properties"]
    send["destinations"].update(minItems=1, maxItems=MAX_DESTINATIONS)
    send["text"].update(minLength=1, maxLength=MAX_TEXT_CHARS)


@functools.cache
def spec_json() -> bytes:
    return msgspec.json.encode(spec())
