"""Operations endpoints over real HTTP: liveness, readiness, metrics, the OpenAPI document.

Contract (message-api.md section 5): `/healthz` is 200 while the process serves; `/readyz` is 200
only when the database answers and the background workers run, else 503 with the reason;
`/metrics` is Prometheus text; `/openapi.json` describes every endpoint.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import ROUTES
from gateway.carriers.sandbox import SIGNATURE_HEADER, InboundEvent, signed_callback
from gateway.errors import StoreError
from tests.conftest import SANDBOX_SECRET, GatewayServer, ServerFactory
from tests.test_api_messages import assert_error


def metric_value(text: str, sample_name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name and sample.labels == labels:
                return sample.value
    return None


def family_names(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


async def get_metrics(server: GatewayServer) -> str:
    response = await server.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


async def post_inbound(
    server: GatewayServer, to: str, secret: str = SANDBOX_SECRET
) -> httpx.Response:
    event = InboundEvent(id=f"sbx_in_{uuid.uuid4().hex}", from_="+15557770000", to=to, text="hi")
    body, signature = signed_callback(secret, event, time.time())
    return await server.client.post(
        "/hooks/sandbox",
        content=body,
        headers={SIGNATURE_HEADER: signature, "content-type": "application/json"},
    )


# Liveness and readiness ------------------------------------------------------------------------


async def test_healthz_is_200(gateway_server: GatewayServer) -> None:
    response = await gateway_server.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_with_the_database_and_workers_running(
    gateway_server: GatewayServer,
) -> None:
    tasks = ["dispatch", "inbox", "normaliser", "retention", "webhooks"]
    assert sorted(gateway_server.gateway._tasks) == tasks
    response = await gateway_server.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


async def test_readyz_is_503_when_the_database_is_unavailable(
    gateway_server: GatewayServer,
) -> None:
    await gateway_server.gateway.store.close()
    response = await gateway_server.client.get("/readyz")
    assert_error(response, 503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")
    # Liveness does not depend on the database: the process still serves.
    alive = await gateway_server.client.get("/healthz")
    assert alive.status_code == 200


async def test_the_api_is_503_not_500_when_the_database_is_unavailable(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    await server.gateway.store.close()
    listed = await server.client.get("/v1.0/messages", params={"token": tenant.token})
    assert_error(listed, 503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")
    sent = await server.send(tenant, ["+15550000002"])
    assert_error(sent, 503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")
    metrics = await server.client.get("/metrics")
    assert_error(metrics, 503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")
    # Carrier callbacks only need the inbox; when it is gone too they get the same envelope
    # (they skip Starlette's middleware), and carriers, seeing 503, retry later.
    await server.gateway.inbox.close()
    callback = await post_inbound(server, tenant.number)
    assert_error(callback, 503, "UNAVAILABLE", "DATABASE_UNAVAILABLE")


async def test_a_bug_in_the_callback_path_is_a_logged_500_envelope(
    start_gateway: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.gateway.carriers["sandbox"], "parse", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.app"):
        response = await post_inbound(server, tenant.number)
    assert_error(response, 500, "INTERNAL", "INTERNAL")
    request_id = response.json()["error"]["request_id"]
    [logged] = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged.exc_info is not None and "a bug" in str(logged.exc_info[1])


async def test_readyz_is_503_when_a_worker_stopped(gateway_server: GatewayServer) -> None:
    task = gateway_server.gateway._tasks["dispatch"]
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()
    assert gateway_server.gateway.stopped_workers() == ["dispatch"]
    response = await gateway_server.client.get("/readyz")
    assert_error(response, 503, "UNAVAILABLE", "WORKER_STOPPED")
    assert "dispatch" in response.json()["error"]["message"]
    assert "webhooks" not in response.json()["error"]["message"]


async def test_readyz_names_every_stopped_worker(gateway_server: GatewayServer) -> None:
    tasks = list(gateway_server.gateway._tasks.values())
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=5)
    response = await gateway_server.client.get("/readyz")
    assert_error(response, 503, "UNAVAILABLE", "WORKER_STOPPED")
    message = response.json()["error"]["message"]
    assert "dispatch" in message
    assert "webhooks" in message


async def test_readyz_without_workers_by_design_is_200(start_gateway: ServerFactory) -> None:
    """`run_workers=False` is the embedding/test mode where the caller drives the workers' steps
    itself (`dispatcher.run_once()`); `Gateway.stopped_workers` reports workers that *should* run
    but do not, and none were asked to run, so nothing is stopped and the gateway is ready.
    (`gateway serve` always starts the workers.)"""
    server = await start_gateway(run_workers=False)
    assert server.gateway._tasks == {}
    assert server.gateway.stopped_workers() == []
    response = await server.client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


# Metrics ---------------------------------------------------------------------------------------


async def test_metrics_count_sends_and_show_the_backlog(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    before = await get_metrics(server)
    assert {"gateway_backlog", "gateway_messages_created", "gateway_callbacks"} <= family_names(
        before
    )
    assert "# TYPE gateway_backlog gauge" in before
    assert metric_value(before, "gateway_messages_created_total") == 0.0
    assert metric_value(before, "gateway_backlog", kind="targets_queued") == 0.0
    assert metric_value(before, "gateway_backlog", kind="webhook_events_pending") == 0.0
    assert metric_value(before, "gateway_backlog", kind="inbound_unrouted") == 0.0

    assert (await server.send(tenant, ["+15550000002", "+15550000003"])).status_code == 200
    assert (await server.send(tenant, ["+15550000004"])).status_code == 200
    after = await get_metrics(server)
    assert metric_value(after, "gateway_messages_created_total") == 2.0
    assert metric_value(after, "gateway_backlog", kind="targets_queued") == 3.0
    # The tenant has no webhook_uri, so no events wait for delivery.
    assert metric_value(after, "gateway_backlog", kind="webhook_events_pending") == 0.0

    # A refused send counts nothing.
    refused = await server.send(tenant, ["12"])
    assert refused.status_code == 400
    assert metric_value(await get_metrics(server), "gateway_messages_created_total") == 2.0

    # The dispatcher takes the queued targets off the backlog.
    await server.gateway.dispatcher.run_once()
    drained = await get_metrics(server)
    assert metric_value(drained, "gateway_backlog", kind="targets_queued") == 0.0


async def test_metrics_count_sandbox_callbacks_by_outcome(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    await server.add_tenant("+15550000001")
    assert (await post_inbound(server, "+15550000001")).status_code == 200
    assert (await post_inbound(server, "+15559999999")).status_code == 200  # nobody's number
    forged = await post_inbound(server, "+15550000001", secret="not-the-sandbox-secret")
    assert_error(forged, 403, "PERMISSION_DENIED", "INVALID_SIGNATURE")
    text = await get_metrics(server)
    callbacks = "gateway_callbacks_total"
    assert metric_value(text, callbacks, carrier="sandbox", outcome="applied") == 1.0
    assert metric_value(text, callbacks, carrier="sandbox", outcome="unrouted") == 1.0
    assert metric_value(text, callbacks, carrier="sandbox", outcome="forged") == 1.0
    assert metric_value(text, "gateway_callback_seconds_count", carrier="sandbox") == 2.0
    assert metric_value(text, "gateway_backlog", kind="inbound_unrouted") == 1.0
    # "Messages accepted through the API" (the metric's help): inbound SMS are not counted.
    assert metric_value(text, "gateway_messages_created_total") == 0.0


# OpenAPI ---------------------------------------------------------------------------------------


async def test_openapi_is_3_1_json_with_the_contract_schemas(
    gateway_server: GatewayServer,
) -> None:
    response = await gateway_server.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec = json.loads(response.content)
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"]
    assert spec["info"]["version"]
    schemas = spec["components"]["schemas"]
    for name in ("Message", "SendRequest", "ErrorEnvelope", "WebhookEvent"):
        assert name in schemas, name
    assert list(schemas["Message"]["properties"])[:10] == [
        "id", "customer_id", "type", "source", "targets", "text", "direction",
        "tm_create", "tm_update", "tm_delete",
    ]  # fmt: skip
    assert list(schemas["ErrorEnvelope"]["properties"]) == ["error"]
    # Every $ref points at a schema that exists.
    refs = set(_refs(spec))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/")
        assert ref.removeprefix("#/components/schemas/") in schemas, ref


def _refs(value: object) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for item in value.values() for ref in _refs(item)]
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    return []


async def test_openapi_describes_every_route(gateway_server: GatewayServer) -> None:
    spec = (await gateway_server.client.get("/openapi.json")).json()
    missing = []
    for route in ROUTES:
        # HEAD is added by Starlette to every GET route; it is not a separate operation.
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if method.lower() not in spec["paths"].get(route.path, {}):
                missing.append(f"{method} {route.path}")
    assert missing == []


# Request ids -----------------------------------------------------------------------------------


async def test_every_error_carries_its_request_id_in_a_header(
    gateway_server: GatewayServer,
) -> None:
    server = gateway_server
    tenant = await server.add_tenant("+15550000001")
    token = {"token": tenant.token}
    responses = [
        await server.client.get("/v1.0/messages"),  # 401
        await server.client.get("/v1.0/messages/not-a-uuid", params=token),  # 400
        await server.client.get(f"/v1.0/messages/{uuid.uuid4()}", params=token),  # 404
        await server.client.get("/v1.0/nothing"),  # 404 unknown path
        await server.client.put("/v1.0/messages"),  # 405
        await server.client.post("/hooks/nowhere"),  # 404 unknown carrier
        await post_inbound(server, tenant.number, secret="forged-secret"),  # 403
        await server.send(tenant, ["+15550000002"], "x" * 70000),  # 413
    ]
    task = server.gateway._tasks["webhooks"]
    task.cancel()
    await asyncio.wait([task], timeout=5)
    responses.append(await server.client.get("/readyz"))  # 503
    seen = set()
    for response in responses:
        assert response.status_code >= 400
        request_id = response.json()["error"]["request_id"]
        assert request_id.startswith("req_")
        assert response.headers["x-request-id"] == request_id, response.request.url
        seen.add(request_id)
    assert len(seen) == len(responses)
    assert [r.status_code for r in responses] == [401, 400, 404, 404, 405, 404, 403, 413, 503]


async def test_shutdown_closes_the_database_even_when_a_step_before_it_fails(
    start_gateway: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await start_gateway()

    async def broken() -> None:
        raise RuntimeError("could not stop")

    monkeypatch.setattr(server.gateway.deliverer, "close", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.runtime"):
        await server.stop()
    assert "shutdown" in caplog.text and "could not stop" in caplog.text
    # Closed all the same: an open connection's thread would keep the process from exiting.
    with pytest.raises(StoreError):
        await server.gateway.store.ping()
