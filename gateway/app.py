"""The HTTP surface: routes, thin endpoints, lifespan, error -> HTTP map (only Starlette user)."""

from __future__ import annotations

import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway import deliveries, netguard, openapi
from gateway.carriers.base import Ack, CallbackRequest
from gateway.clock import Clock
from gateway.config import Config
from gateway.errors import (
    ApiError,
    InvalidArgument,
    InvalidSignature,
    MalformedCallback,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    StoreError,
    Unauthenticated,
    Unavailable,
)
from gateway.messages import parse_page_size, parse_send_request
from gateway.models import ErrorBody, ErrorEnvelope
from gateway.runtime import Gateway

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
MAX_IDEMPOTENCY_KEY_CHARS = 255


def json_response(value: Any, status_code: int = 200) -> Response:
    return Response(_encoder.encode(value), status_code, media_type="application/json")


def error_response(error: ApiError) -> Response:
    request_id = f"req_{uuid.uuid4().hex}"
    body = ErrorEnvelope(ErrorBody(error.status, error.reason, error.message, request_id))
    response = json_response(body, error.http_status)
    response.headers["x-request-id"] = request_id
    if isinstance(error, ResourceExhausted):
        response.headers["retry-after"] = str(error.retry_after_s)
    return response


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def read_body(request: Request) -> bytes:
    limit = _gateway(request).config.server.max_body_bytes
    declared = request.headers.get("content-length", "")
    return await _read_limited(request.stream(), declared, limit)


async def authenticate(request: Request) -> str:
    token = request.query_params.get("token")
    authorization = request.headers.get("authorization")
    if not token and authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("INVALID_CREDENTIALS", "Authorization must be 'Bearer <token>'")
        token = credentials.strip()
    token = token or request.cookies.get("token")
    access_key = request.query_params.get("accesskey")
    gateway = _gateway(request)
    customer_id = await gateway.auth.customer_for(token, access_key)
    wait_s = gateway.rate_limits.take(customer_id)
    if wait_s > 0:
        raise ResourceExhausted(
            "RATE_LIMIT_EXCEEDED", "too many requests; retry later", math.ceil(wait_s)
        )
    return customer_id


# Customer API --------------------------------------------------------------------------------


async def send_message(request: Request) -> Response:
    gateway = _gateway(request)
    customer_id = await authenticate(request)
    send_request, body_hash = parse_send_request(await read_body(request))
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument(
            "INVALID_ARGUMENT",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters",
        )
    message = await gateway.messages.send(customer_id, send_request, body_hash, key)
    gateway.metrics.messages_sent.inc()
    return json_response(message)


async def list_messages(request: Request) -> Response:
    customer_id = await authenticate(request)
    page_size = parse_page_size(request.query_params.get("page_size"))
    token = request.query_params.get("page_token", "")
    page = await _gateway(request).messages.list(customer_id, page_size, token)
    return json_response(page)


async def get_message(request: Request) -> Response:
    customer_id = await authenticate(request)
    message = await _gateway(request).messages.get(customer_id, request.path_params["id"])
    return json_response(message)


async def delete_message(request: Request) -> Response:
    customer_id = await authenticate(request)
    message = await _gateway(request).messages.delete(customer_id, request.path_params["id"])
    return json_response(message)


async def list_deliveries(request: Request) -> Response:
    customer_id = await authenticate(request)
    query = deliveries.parse_list_query(customer_id, request.query_params)
    return json_response(await deliveries.list_page(_gateway(request).store, query))


async def get_delivery(request: Request) -> Response:
    customer_id = await authenticate(request)
    found = await deliveries.get(_gateway(request).store, customer_id, request.path_params["id"])
    return json_response(found)


async def resend_delivery(request: Request) -> Response:
    gateway = _gateway(request)
    customer_id = await authenticate(request)
    now = gateway.clock.now()
    delivery = await deliveries.resend(gateway.store, customer_id, request.path_params["id"], now)
    gateway.webhook_wakeup.notify()  # due now: the worker need not wait for its next poll
    return json_response(delivery)


# Carriers -------------------------------------------------------------------------------------


class CarrierHook:
    """`/hooks/{carrier}`, the busiest route by far, as a plain ASGI app: Starlette's Request,
    Headers and URL objects cost more than the rest of the callback's own work before the
    commit. POST and GET reach it straight from `GatewayApp`; other methods get Starlette's 405."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway = scope["app"].state.gateway
        await _send_ack(
            send, await self.answer(gateway, scope["path_params"]["carrier"], scope, receive)
        )

    async def answer(self, gateway: Gateway, name: str, scope: Scope, receive: Receive) -> Ack:
        """Verify, parse and commit one callback to the inbox; the carrier's acknowledgement."""
        carrier = gateway.carriers.get(name)
        if carrier is None:
            raise NotFound("CARRIER_NOT_FOUND", f"no configured carrier '{name}'")
        started_s = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw_query: bytes = scope["query_string"]
        callback_request = CallbackRequest(
            method=scope["method"],
            url=_public_url(gateway, scope["path"], raw_query.decode("utf-8", "replace")),
            headers=headers,
            query=_query_params(raw_query) if raw_query else {},
            body=await _read_limited(
                _received_chunks(receive),
                headers.get("content-length", ""),
                gateway.config.server.max_body_bytes,
            ),
        )
        try:
            carrier.verify(callback_request, gateway.clock.now().timestamp())
        except InvalidSignature as exc:
            gateway.metrics.count_callback(name, "forged")
            raise PermissionDenied("INVALID_SIGNATURE", f"callback rejected: {exc}") from exc
        try:
            callback = carrier.parse(callback_request)
        except MalformedCallback as exc:
            raise InvalidArgument("INVALID_CALLBACK", str(exc)) from exc
        await gateway.callbacks.accept(name, callback)
        gateway.metrics.time_callback(name, time.perf_counter() - started_s)
        return carrier.ack


async def _send_ack(send: Send, ack: Ack) -> None:
    content_type = ack.content_type
    if content_type.startswith("text/") and "charset" not in content_type:
        content_type += "; charset=utf-8"  # as Starlette's Response would say
    start = {
        "type": "http.response.start",
        "status": ack.status_code,
        "headers": [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(ack.body)).encode("latin-1")),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": ack.body})


async def _read_limited(chunks: AsyncIterator[bytes], declared: str, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes without reading it all. `declared` is the
    Content-Length header."""
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge("BODY_TOO_LARGE", f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge("BODY_TOO_LARGE", f"request body is larger than {limit} bytes")
    return bytes(body)


async def _received_chunks(receive: Receive) -> AsyncIterator[bytes]:
    """The request body as it arrives (what Starlette's `request.stream()` does)."""
    while True:
        message = await receive()
        if message["type"] == "http.request":
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _query_params(raw_query: bytes) -> dict[str, str]:
    """Parsed as Starlette's QueryParams would be (the last of repeated names wins)."""
    return dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))


def _public_url(gateway: Gateway, path: str, query: str) -> str:
    """The URL the carrier called, as it signed it: public_url + path + query."""
    # The scope's path already holds any root_path (uvicorn and Starlette's Mount put it there).
    url = gateway.config.server.public_url.rstrip("/") + path
    return f"{url}?{query}" if query else url


async def sandbox_submit(request: Request) -> Response:
    """The sandbox's simulated carrier API (what a real carrier's REST API would be)."""
    simulator = _gateway(request).simulator
    if simulator is None:
        raise NotFound("NOT_FOUND", "the sandbox carrier is not configured")
    if not simulator.authorised(request.headers.get("authorization", "")):
        raise Unauthenticated("INVALID_CREDENTIALS", "sandbox API key is wrong")
    try:
        accepted = simulator.accept(await read_body(request))
    except ValueError as exc:  # jsonbody.NotJson or WrongShape
        raise InvalidArgument("INVALID_ARGUMENT", f"invalid sandbox submission: {exc}") from exc
    return json_response(accepted)


# Operations -----------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = _gateway(request)
    try:
        await gateway.store.ping()
    except StoreError as exc:
        raise Unavailable("DATABASE_UNAVAILABLE", f"the database does not answer: {exc}") from exc
    stopped = gateway.stopped_workers()
    if stopped:
        raise Unavailable("WORKER_STOPPED", f"background workers not running: {', '.join(stopped)}")
    return json_response({"status": "ready"})


async def metrics(request: Request) -> Response:
    gateway = _gateway(request)
    backlog = await gateway.store.count_backlog()
    backlog["callbacks_waiting"] = await gateway.callbacks.waiting()
    body = gateway.metrics.render(backlog)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi_spec(request: Request) -> Response:
    return Response(openapi.spec_json(), media_type="application/json")


# Errors ---------------------------------------------------------------------------------------


async def on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        response = error_response(
            MethodNotAllowed("METHOD_NOT_ALLOWED", f"{request.method} is not allowed here")
        )
        response.headers["allow"] = ", ".join(_allowed_methods(request))
        return response
    if exc.status_code == 404:
        return error_response(NotFound("NOT_FOUND", f"no such path: {request.url.path}"))
    return error_response(InvalidArgument("INVALID_ARGUMENT", str(exc.detail)))


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    path = request.url.path
    methods = {
        method
        for route in request.app.routes
        if isinstance(route, Route) and route.path_regex.match(path)
        for method in route.methods or ()
    }
    return sorted(methods)


async def on_error(request: Request, exc: Exception) -> Response:
    return _error_for(exc, request.method, request.url.path)


def _error_for(exc: Exception, method: str, path: str) -> Response:
    """The error envelope for what an endpoint raised (its own errors, the database's, a bug)."""
    if isinstance(exc, ApiError):
        return error_response(exc)
    if isinstance(exc, StoreError):
        log.error("database error on %s %s: %s", method, path, exc)
        return error_response(
            Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable; retry")
        )
    response = error_response(ApiError("INTERNAL", "internal error; it has been logged"))
    log.error("unexpected error, request_id=%s", response.headers["x-request-id"], exc_info=exc)
    return response


ROUTES = [
    # First: carrier callbacks are the busiest route, and routes are tried in order.
    Route("/hooks/{carrier}", CarrierHook(), methods=["POST", "GET"]),
    Route("/v1.0/messages", send_message, methods=["POST"]),
    Route("/v1.0/messages", list_messages, methods=["GET"]),
    Route("/v1.0/messages/{id}", get_message, methods=["GET"]),
    Route("/v1.0/messages/{id}", delete_message, methods=["DELETE"]),
    Route("/v1.0/webhook_deliveries", list_deliveries, methods=["GET"]),
    Route("/v1.0/webhook_deliveries/{id}", get_delivery, methods=["GET"]),
    Route("/v1.0/webhook_deliveries/{id}/resend", resend_delivery, methods=["POST"]),
    Route("/sandbox/v1/messages", sandbox_submit, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_spec, methods=["GET"]),
]


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    resolver: netguard.Resolver = netguard.system_resolver,
    run_workers: bool = True,
) -> GatewayApp:
    """The ASGI app; the gateway opens at start-up and closes at shutdown."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = await Gateway.open(config, clock=clock, resolver=resolver)
        app.state.gateway = gateway
        try:
            if run_workers:
                await gateway.start_workers()
            yield
        finally:
            await gateway.close()

    return GatewayApp(
        Starlette(
            routes=ROUTES,
            lifespan=lifespan,
            exception_handlers={
                ApiError: on_error,
                HTTPException: on_http_exception,
                StoreError: on_error,
                Exception: on_error,
            },
        )
    )


_HOOK_PATH = re.compile(r"/hooks/([^/]+)")  # what Route("/hooks/{carrier}") matches


def _route_path(scope: Scope) -> str:
    """The path routes match, as Starlette finds it: without the root path, which uvicorn's
    --root-path puts in front of `path` too."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :]
    return path


class GatewayApp:
    """The ASGI app: Starlette, except that carrier callbacks (POST or GET to /hooks/{carrier})
    skip its middleware and routing, which cost about as much as the callback's own parsing.
    Their errors get the same envelope as everywhere else."""

    def __init__(self, starlette: Starlette) -> None:
        self.starlette = starlette
        self.state = starlette.state
        self._hook = CarrierHook()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hook = _HOOK_PATH.fullmatch(_route_path(scope)) if scope["type"] == "http" else None
        if hook is None or scope["method"] not in ("POST", "GET"):
            await self.starlette(scope, receive, send)
            return
        scope["app"] = self.starlette
        try:
            ack = await self._hook.answer(self.state.gateway, hook[1], scope, receive)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            response = _error_for(exc, scope["method"], scope["path"])
            await response(scope, receive, send)
            return
        await _send_ack(send, ack)
