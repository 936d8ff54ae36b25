"""Seeded, bounded fuzzing through the real server (message-api.md: "Bad input anywhere yields the
JSON error envelope with a 4xx, never a 500, and stores nothing").

Every case is generated from a fixed `random.Random` seed, so a failure reproduces exactly; the
assertion message carries the request. The inputs that once answered 500 (or were stored) are
pinned at the end of this file as regression tests.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.signing import sign_sandbox
from tests.conftest import SANDBOX_SECRET, GatewayServer, ServerFactory, Tenant

SEED = 20260101
NUMBER = "+15550000001"
OTHER_NUMBER = "+15550000009"
DESTINATION = "+15550000002"
SIGNATURE = b"x-sandbox-signature"
VALID_TIME = "2026-01-01 00:00:00.000000"

# The contract's HTTP code for each error status (405 and 413 are the gateway's own additions).
ENVELOPE_CODES = {
    ("INVALID_ARGUMENT", 400),
    ("INVALID_ARGUMENT", 413),
    ("UNAUTHENTICATED", 401),
    ("PERMISSION_DENIED", 403),
    ("NOT_FOUND", 404),
    ("METHOD_NOT_ALLOWED", 405),
    ("ALREADY_EXISTS", 409),
    ("RESOURCE_EXHAUSTED", 429),
}


# JSON that may be broken on purpose ------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """A JSON text fragment written as is (often invalid JSON on purpose)."""

    text: str


@dataclass
class Obj:
    """A JSON object as ordered pairs, so a key can repeat."""

    pairs: list[tuple[str, Any]]

    def put(self, key: str, value: Any) -> None:
        self.pairs = [(k, value if k == key else v) for k, v in self.pairs]

    def drop(self, key: str) -> None:
        self.pairs = [(k, v) for k, v in self.pairs if k != key]


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{dump(v)}" for k, v in value.pairs)
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def encode(value: Any) -> bytes:
    return dump(value).encode()


def deep(depth: int, opener: str = "[") -> Raw:
    if opener == "[":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


STRINGS = [
    "", " ", "tel", "TEL", "sms", "email", DESTINATION, NUMBER, OTHER_NUMBER, "15550000002",
    "+0123456789", "+1555", "+1" + "5" * 20, "x" * 161, "x" * 1601, "é" * 200, "😀", "😀" * 900,
    "\u0000", "a\u0000b", "\u202e+15550000002", "\ufeff", "\uffff", "\U0001d54f", "null",
    "a" * 5000,
]  # fmt: skip
SCALARS = [
    "null", "true", "false", "0", "-1", "-0.0", "1.5", "1e308", "18446744073709551616", "9" * 400,
    "1e400", "-1e400", '"\\u0000"', '"\\ud83d\\ude00"', '"\\u00e9"', '"x"',
]  # fmt: skip
LONE_SURROGATES = ['"\\ud800"', '"\\udfff"', '"a\\ud800b"', '"\\udc00\\ud800"', '"\\ud800\\u0041"']
NOT_JSON = [
    "NaN", "Infinity", "01", ".5", "+1", "'x'", "tru", '"\\x41"', '"\t"', "[1,]", "{,}", '{"a"}',
    "",
]  # fmt: skip
CONTAINERS = [
    "[]", "{}", "[null]", "[[1],[2,[3]]]", '{"a":{"b":{"c":[]}}}',
    "[" + ",".join(['{"target":"+15550000002"}'] * 101) + "]",
]  # fmt: skip
RAW = SCALARS + LONE_SURROGATES + NOT_JSON + CONTAINERS
INVALID_UTF8 = [
    b"\xff",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xc0\xaf",
    b"\x80",
]
UNKNOWN_KEYS = ["extra", "", "Text", "text ", "é", "source\u0000", "😀", "__proto__", "a" * 300]


def garbage(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(10)
    if kind < 3:
        return rng.choice(STRINGS)
    if kind < 7:
        return Raw(rng.choice(RAW))
    if kind == 7:
        return deep(rng.choice([50, 10_000]), rng.choice("[{"))
    if depth > 2:
        return None
    if kind == 8:
        return [garbage(rng, depth + 1) for _ in range(rng.randrange(3))]
    return Obj([(rng.choice(UNKNOWN_KEYS), garbage(rng, depth + 1))])


# Response checks -------------------------------------------------------------------------------


def describe(method: str, url: str, headers: Any = None, body: bytes = b"") -> str:
    shown = body if len(body) <= 400 else body[:300] + b"..." + body[-60:]
    return f"{method} {url[:400]!r} headers={headers!r} body({len(body)} bytes)={shown!r}"


def assert_envelope(response: httpx.Response, what: str) -> dict[str, str]:
    try:
        body = response.json()
    except ValueError:
        pytest.fail(
            f"{response.status_code} without a JSON envelope {response.text[:300]!r}: {what}"
        )
    assert isinstance(body, dict), f"{body!r}: {what}"
    assert list(body) == ["error"], f"{body!r}: {what}"
    error = body["error"]
    assert list(error) == ["status", "reason", "message", "request_id"], f"{body!r}: {what}"
    assert all(isinstance(v, str) and v for v in error.values()), f"{body!r}: {what}"
    assert error["request_id"].startswith("req_"), f"{body!r}: {what}"
    assert (error["status"], response.status_code) in ENVELOPE_CODES, f"{body!r}: {what}"
    return dict(error)


def check(response: httpx.Response, what: str) -> str | None:
    """Never a 5xx; a 4xx carries the envelope. The error reason, or None for a success."""
    assert response.status_code < 500, f"{response.status_code} {response.text!r}: {what}"
    if response.status_code < 400:
        return None
    return assert_envelope(response, what)["reason"]


# POST /v1.0/messages ---------------------------------------------------------------------------


def send_body(number: str = NUMBER, destination: str = DESTINATION, text: str = "hello") -> Obj:
    return Obj(
        [
            ("source", Obj([("type", "tel"), ("target", number)])),
            ("destinations", [Obj([("type", "tel"), ("target", destination)])]),
            ("text", text),
        ]
    )


def containers(value: Any) -> list[Any]:
    if isinstance(value, Obj):
        return [value, *(c for _, v in value.pairs for c in containers(v))]
    if isinstance(value, list):
        return [value, *(c for v in value for c in containers(v))]
    return []


def mutate_object(rng: random.Random, node: Obj) -> None:
    op = rng.choice(["drop", "duplicate", "swap", "add"]) if node.pairs else "add"
    i = rng.randrange(len(node.pairs)) if node.pairs else 0
    if op == "drop":
        del node.pairs[i]
    elif op == "duplicate":
        key, value = node.pairs[i]
        again = rng.choice([value, garbage(rng)])
        node.pairs.insert(rng.randrange(len(node.pairs) + 1), (key, again))
    elif op == "swap":
        node.pairs[i] = (node.pairs[i][0], garbage(rng))
    else:
        node.pairs.insert(i, (rng.choice(UNKNOWN_KEYS), garbage(rng)))


def mutate_list(rng: random.Random, node: list[Any]) -> None:
    op = rng.choice(["drop", "many", "swap", "append", "clear"]) if node else "append"
    if op == "drop":
        node.pop(rng.randrange(len(node)))
    elif op == "many":
        node.extend([node[0]] * rng.choice([1, 99, 100]))
    elif op == "swap":
        node[rng.randrange(len(node))] = garbage(rng)
    elif op == "append":
        node.append(garbage(rng))
    else:
        node.clear()


def mutate_bytes(rng: random.Random, body: bytes) -> bytes:
    op = rng.randrange(8)
    at = rng.randrange(len(body) + 1)
    if op == 0:
        return body[:at]
    if op == 1 and body:
        at = min(at, len(body) - 1)
        return body[:at] + bytes([body[at] ^ rng.randrange(1, 256)]) + body[at + 1 :]
    if op == 2:
        return body[:at] + rng.choice(INVALID_UTF8) + body[at:]
    if op == 3:
        return body[:at] + b"\x00" + body[at:]
    if op == 4:
        return b""
    if op == 5:
        return b"\xef\xbb\xbf" + body
    if op == 6:
        return b" \n\t" + body + b"\r\n"
    return body + rng.choice([b"x", b"}", b"]", body])


CONTENT_TYPES = [
    b"application/json", b"text/plain", b"application/x-www-form-urlencoded", b"",
    b"multipart/form-data; boundary=x", b"application/json; charset=latin-1", b"*/*",
    b"application/xml", b"\xe9\xe9/json",
]  # fmt: skip
# Header values are latin-1; h11 refuses control characters and edge whitespace client-side.
IDEMPOTENCY_KEYS = [
    b"",
    b"k" * 300,
    b"k" * 255,
    b"k" * 256,
    b"a b",
    b"cl\xe9-\xfc",
    b"key-1",
    b"a\tb",
]


def random_headers(rng: random.Random) -> dict[bytes, bytes]:
    headers: dict[bytes, bytes] = {}
    if rng.random() < 0.8:
        headers[b"content-type"] = rng.choice(CONTENT_TYPES)
    if rng.random() < 0.3:
        headers[b"idempotency-key"] = rng.choice(IDEMPOTENCY_KEYS)
    return headers


def mutated_send_body(rng: random.Random) -> bytes:
    if rng.random() < 0.05:
        return encode(garbage(rng))
    body = send_body()
    for _ in range(rng.randint(1, 3)):
        node = rng.choice(containers(body))
        if isinstance(node, Obj):
            mutate_object(rng, node)
        else:
            mutate_list(rng, node)
    raw = encode(body)
    return mutate_bytes(rng, raw) if rng.random() < 0.3 else raw


def auth_params(rng: random.Random, tenant: Tenant) -> dict[str, str]:
    roll = rng.random()
    if roll < 0.03:
        return {}
    if roll < 0.06:
        return {"token": tenant.token[:-3] + "abc"}
    return {"token": tenant.token}


async def stored_ids(server: GatewayServer, customer_id: str) -> set[str]:
    return {m.id for m in await server.gateway.store.list_messages(customer_id, 1000, None)}


async def test_fuzzed_send_bodies_never_5xx_and_store_only_accepted_messages(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    other = await server.add_tenant(OTHER_NUMBER)
    control = await server.send(tenant, [DESTINATION])
    assert control.status_code == 200, control.text
    accepted = {control.json()["id"]}
    rng = random.Random(SEED)
    for _ in range(220):
        body, headers, params = (
            mutated_send_body(rng),
            random_headers(rng),
            auth_params(rng, tenant),
        )
        response = await server.client.post(
            "/v1.0/messages", content=body, headers=headers, params=params
        )
        check(response, describe("POST", str(response.url), headers, body))
        if response.status_code == 200:
            accepted.add(response.json()["id"])
    assert await stored_ids(server, tenant.id) == accepted
    assert await stored_ids(server, other.id) == set()
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    assert len(accepted) < 60, "most mutations should be refused; is the fuzzer still mutating?"


# GET /v1.0/messages ----------------------------------------------------------------------------

PAGE_SIZES = [
    "", "0", "-1", "1", "100", "101", "1e2", "1.5", "%201%20", "0x10", "%00", "9" * 30, "9" * 5000,
    "%D9%A1%D9%A2", "NaN", "true", "%5B%5D", "%FF", "1%00", "+5", "1_0",
]  # fmt: skip
PAGE_TOKENS = [
    "", VALID_TIME, "%00", "a" * 3000, "-1", "1.5", "|", "||", "%7C%7C", "9999-12-31 23:59:59.9",
    VALID_TIME + "|garbage", VALID_TIME + "|%00", VALID_TIME + "|" + "f" * 32, VALID_TIME + "||x",
    "2026-13-01 00:00:00.000000", "2026-01-01T00:00:00Z", VALID_TIME + "%0A", "%E2%82%AC", "%FF",
    "|" + str(uuid.uuid4()), VALID_TIME + "|" + str(uuid.uuid4()), "0001-01-01 00:00:00.0",
]  # fmt: skip


def random_list_query(rng: random.Random, tokens: list[str]) -> str:
    pairs = []
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(["page_size", "page_token", "page_token", "other", "page_size[]"])
        pool = PAGE_SIZES if key.startswith("page_size") else tokens
        pairs.append(f"{key}={rng.choice(pool)}")
    return "&".join(pairs)


async def test_fuzzed_list_queries_answer_a_page_or_400(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    other = await server.add_tenant(OTHER_NUMBER)
    for _ in range(3):
        assert (await server.send(tenant, [DESTINATION])).status_code == 200
    assert (await server.send(other, [DESTINATION])).status_code == 200
    first = (await server.client.get("/v1.0/messages?page_size=1&token=" + tenant.token)).json()
    tokens = [*PAGE_TOKENS, first["next_page_token"]]
    rng = random.Random(SEED + 1)
    for _ in range(70):
        url = f"/v1.0/messages?token={tenant.token}&{random_list_query(rng, tokens)}"
        response = await server.client.get(url)
        reason = check(response, describe("GET", url))
        assert response.status_code in (200, 400), describe("GET", url)
        if reason is not None:
            assert reason == "INVALID_REQUEST_PARAMETER", describe("GET", url)
            continue
        page = response.json()
        assert len(page["result"]) <= 3 and isinstance(page["next_page_token"], str)
        assert {m["customer_id"] for m in page["result"]} <= {tenant.id}, describe("GET", url)
    assert len(await stored_ids(server, tenant.id)) == 3


# GET / DELETE /v1.0/messages/{id} --------------------------------------------------------------

PATH_IDS = [
    "%00", "%2F", "%2e%2e", "%FF", "%E2%82%AC", "%20", "null", "-1", "0", "x" * 3000, "%25",
    "a%2Fb", "%3Fx=1", "%23", "1" * 32 + "0", "urn:uuid:x", "{}", "%7B%7D", ";", "%0A",
    "00000000-0000-0000-0000-00000000000g", "0" * 36,
]  # fmt: skip


def wrong_version(message_id: str, rng: random.Random) -> str:
    return message_id[:14] + rng.choice("0123567f") + message_id[15:]


def random_path_id(rng: random.Random, real_ids: list[str]) -> tuple[str, bool]:
    """A path segment, and whether it is a well-formed UUID that names no message of the caller."""
    kind = rng.randrange(5)
    if kind == 0:
        return wrong_version(rng.choice(real_ids), rng), True
    if kind == 1:
        fresh = uuid.uuid4()
        return rng.choice([str(fresh), fresh.hex, wrong_version(str(fresh), rng)]), True
    if kind == 2:  # one hex digit less (a dash less would still name the message)
        real = rng.choice(real_ids)
        cut = rng.choice([i for i, c in enumerate(real) if c != "-"])
        return real[:cut] + real[cut + 1 :], False
    return rng.choice(PATH_IDS), False


async def test_fuzzed_message_ids_never_5xx_and_delete_nothing(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    other = await server.add_tenant(OTHER_NUMBER)
    mine = [(await server.send(tenant, [DESTINATION])).json()["id"] for _ in range(2)]
    theirs = (await server.send(other, [DESTINATION])).json()["id"]
    rng = random.Random(SEED + 2)
    for _ in range(70):
        path_id, unknown_uuid = random_path_id(rng, mine)
        if rng.random() < 0.1:
            path_id, unknown_uuid = theirs, True
        method = rng.choice(["GET", "DELETE"])
        url = f"/v1.0/messages/{path_id}?token={tenant.token}"
        response = await server.client.request(method, url)
        reason = check(response, describe(method, url))
        assert response.status_code != 200, describe(method, url)
        if unknown_uuid:
            assert (response.status_code, reason) == (404, "MESSAGE_NOT_FOUND"), describe(
                method, url
            )
    assert await stored_ids(server, tenant.id) == set(mine)
    assert await stored_ids(server, other.id) == {theirs}


# POST /hooks/sandbox ---------------------------------------------------------------------------


def inbound_event(n: int, to: str) -> Obj:
    return Obj(
        [("event", "inbound"), ("id", f"sbx_fuzz_{n}"), ("from", "+15557770000"), ("to", to),
         ("text", "hi")]
    )  # fmt: skip


def status_event(n: int) -> Obj:
    return Obj(
        [("event", "status"), ("id", f"sbx_fuzz_{n}"), ("message_id", f"sbx_{n}"),
         ("status", "delivered"), ("error_code", ""), ("parts", 1)]
    )  # fmt: skip


def random_event(rng: random.Random, n: int) -> Obj:
    if rng.random() < 0.5:
        return status_event(n)
    return inbound_event(n, rng.choice([NUMBER, "+15550009999"]))


REQUIRED = {"inbound": ["id", "from"], "status": ["id", "message_id", "status"]}
NOT_A_STRING = [Raw(r) for r in ["null", "1", "1.5", "true", "[]", "{}", '["x"]']] + [deep(10_000)]
NOT_AN_INT = [Raw(r) for r in ['"3"', "1.5", "true", "[]", "{}", '"1"']]
BAD_STATUSES = ["sent", "queued", "received", "DELIVERED", "", "delivered ", "gw_timeout"]
BAD_TAGS = [Raw(r) for r in ['"Inbound"', '""', '"sms"', "null", "1", "[]", '{"event":"inbound"}']]


def string_keys(event: Obj) -> list[str]:
    return [k for k, v in event.pairs if isinstance(v, str) and k != "event"]


def break_type(rng: random.Random, event: Obj) -> None:
    """A field of the wrong type or value, or a required field dropped."""
    kind = str(event.pairs[0][1])
    op = rng.randrange(5)
    if op == 0:
        event.drop(rng.choice(REQUIRED[kind]))
    elif op == 1:
        event.put(rng.choice(string_keys(event)), rng.choice(NOT_A_STRING))
    elif op == 2:
        event.put("event", rng.choice(BAD_TAGS))
    elif op == 3:
        event.drop("event")
    elif kind == "status":
        event.put("status", rng.choice(BAD_STATUSES))
        if rng.random() < 0.5:
            event.put("parts", rng.choice(NOT_AN_INT))
    else:
        event.put(rng.choice(string_keys(event)), Raw(rng.choice(LONE_SURROGATES)))


def broken_field(rng: random.Random, event: Obj) -> bytes:
    """An event with one field that makes it no callback the sandbox sends."""
    if rng.random() < 0.2:  # invalid UTF-8 inside a string the decoder must read
        event.put(rng.choice(string_keys(event)), "@@INVALID@@")
        return encode(event).replace(b"@@INVALID@@", rng.choice(INVALID_UTF8))
    break_type(rng, event)
    if rng.random() < 0.3:  # an unknown field does not make it any better
        event.pairs.append((rng.choice(UNKNOWN_KEYS[:4]), Raw(rng.choice(SCALARS + CONTAINERS))))
    return encode(event)


def garbage_callback(rng: random.Random, n: int) -> bytes:
    """A body that is certainly not a valid sandbox callback."""
    event = random_event(rng, n)
    kind = rng.randrange(5)
    if kind == 0:
        body = encode(event)
        return body[: rng.randrange(len(body))]  # a strict prefix of an object is never JSON
    if kind == 1:
        not_objects = [Raw(r) for r in SCALARS + LONE_SURROGATES + NOT_JSON] + [deep(10_000)]
        return encode(rng.choice([*not_objects, [event]]))
    if kind == 2:
        return encode(event) + rng.choice([b"x", b"}", b"]", encode(event), b"\x00"])
    return broken_field(rng, event)


def forged_signature(rng: random.Random, now_s: int, body: bytes) -> bytes | None:
    good = sign_sandbox(SANDBOX_SECRET, now_s, body)
    choices = [
        None, "", "garbage", "t=,v1=", "t=abc,v1=00", f"t={now_s},v1={'0' * 64}", f"t={now_s}",
        good.split(",")[1], sign_sandbox("wrong-secret", now_s, body), sign_sandbox(
            SANDBOX_SECRET, now_s, body + b" "), sign_sandbox(SANDBOX_SECRET, now_s - 1000, body),
        sign_sandbox(SANDBOX_SECRET, now_s + 1000, body), f"t=1e10,{good.split(',')[1]}",
        f"t={'9' * 5000},v1=00", f"t=-{now_s},v1=00", good + ",v1=" + "0" * 64, good.upper(),
        f"t={now_s}, v1={good.split('v1=')[1]}\xe9", "t=" + str(now_s) + ",v1=" + "\xff" * 64,
    ]  # fmt: skip
    choice = rng.choice(choices)
    return None if choice is None else choice.encode("latin-1")


async def post_hook(
    server: GatewayServer, body: bytes, signature: bytes | None, rng: random.Random
) -> tuple[httpx.Response, str]:
    headers = {b"content-type": rng.choice(CONTENT_TYPES)}
    if signature is not None:
        headers[SIGNATURE] = signature
    response = await server.client.post("/hooks/sandbox", content=body, headers=headers)
    return response, describe("POST", "/hooks/sandbox", headers, body)


async def test_fuzzed_sandbox_callbacks_are_403_or_400_and_store_nothing(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    rng = random.Random(SEED + 3)
    for n in range(50):
        body = encode(random_event(rng, n)) if rng.random() < 0.5 else garbage_callback(rng, n)
        now_s = int(server.clock.now().timestamp())
        response, what = await post_hook(server, body, forged_signature(rng, now_s, body), rng)
        assert check(response, what) == "INVALID_SIGNATURE", what
        assert response.status_code == 403, what
    for n in range(100, 200):
        body = garbage_callback(rng, n)
        signature = sign_sandbox(SANDBOX_SECRET, int(server.clock.now().timestamp()), body)
        response, what = await post_hook(server, body, signature.encode(), rng)
        if check(response, what) is not None:
            assert assert_envelope(response, what)["reason"] == "INVALID_CALLBACK", what
            assert response.status_code == 400, what
        assert response.status_code != 200, what
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0
    assert await stored_ids(server, tenant.id) == set()
    # The control: the same path takes a valid signed inbound SMS (so the 400s above were parsing).
    valid = encode(inbound_event(999, NUMBER))
    signature = sign_sandbox(SANDBOX_SECRET, int(server.clock.now().timestamp()), valid)
    response, what = await post_hook(server, valid, signature.encode(), rng)
    assert response.status_code == 200, what
    assert len(await stored_ids(server, tenant.id)) == 1
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0


# Operations endpoints --------------------------------------------------------------------------

QUERY_KEYS = ["", "a", "token", "accesskey", "page_size", "%00", "%FF", "x" * 500, "a[]", "a.b"]
QUERY_VALUES = [
    "", "%00", "%FF", "%E2%82%AC", "a" * 3000, "-1", "1.5", "|", "&", "=", "%", "%%", "%zz", "+",
    "null", "%5B%5D", "a=b=c", "%0D%0A", "\u00e9",
]  # fmt: skip


WRONG_PATHS = [
    "/readyz", "/healthz", "/metrics", "/openapi.json", "/v1.0/messagez", "/v1.0", "/hooks",
    "/hooks/sandbox/x", "/%00", "/" + "x" * 2000,
]  # fmt: skip


def random_query(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        part = rng.choice(QUERY_KEYS) + (
            ("=" + rng.choice(QUERY_VALUES)) if rng.random() < 0.8 else ""
        )
        parts.append(part)
    return rng.choice(["&", "&&", ";"]).join(parts)


async def test_operations_endpoints_ignore_fuzzed_query_strings(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway()
    rng = random.Random(SEED + 4)
    for _ in range(40):
        path = rng.choice(["/readyz", "/healthz", "/metrics", "/openapi.json"])
        url = f"{path}?{random_query(rng)}"
        response = await server.client.get(url)
        check(response, describe("GET", url))
        assert response.status_code == 200, describe("GET", url)
        if path != "/metrics":
            assert isinstance(response.json(), dict), describe("GET", url)
    for _ in range(20):
        method = rng.choice(["PUT", "PATCH", "DELETE", "POST"])
        path = rng.choice(WRONG_PATHS)
        response = await server.client.request(method, f"{path}?{random_query(rng)}")
        reason = check(response, describe(method, path))
        assert reason in ("METHOD_NOT_ALLOWED", "NOT_FOUND"), describe(method, path)


# Inputs that answered 500 (or were stored) before: regression tests ---------------------------


async def assert_refused_and_nothing_stored(
    server: GatewayServer, tenant: Tenant, response: httpx.Response, reason: str
) -> None:
    what = describe("POST", str(response.url), body=response.request.content)
    assert response.status_code == 400, f"{response.status_code} {response.text}: {what}"
    assert assert_envelope(response, what)["reason"] == reason
    assert await stored_ids(server, tenant.id) == set()
    assert (await server.gateway.store.count_backlog())["inbound_unrouted"] == 0


def with_field(body: bytes, field: bytes) -> bytes:
    """`body` with one more member, `"x": field`, before its "text"."""
    return body.replace(b'"text"', b'"x":' + field + b',"text"', 1)


# msgspec raises UnicodeDecodeError / RecursionError, not DecodeError, on these; and a typed
# decode skips unknown fields unread, so only a full decode finds them.
BAD_SEND_BODIES = {
    "invalid UTF-8 in text": encode(send_body(text="@")).replace(b"@", b"\xff"),
    "invalid UTF-8 in an unknown field": with_field(encode(send_body()), b'"\xc3\x28"'),
    "deep nesting in an unknown field": with_field(encode(send_body()), encode(deep(10_000))),
    "1e400 in an unknown field": with_field(encode(send_body()), b"1e400"),
}


@pytest.mark.parametrize("body", BAD_SEND_BODIES.values(), ids=BAD_SEND_BODIES.keys())
async def test_send_body_that_is_not_json_is_400(start_gateway: ServerFactory, body: bytes) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    response = await server.client.post(
        "/v1.0/messages", content=body, params={"token": tenant.token}
    )
    await assert_refused_and_nothing_stored(server, tenant, response, "INVALID_JSON_BODY")


async def test_destination_with_a_trailing_newline_is_400(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    response = await server.send(tenant, [DESTINATION + "\n"])  # Python's `$` matches before it
    await assert_refused_and_nothing_stored(server, tenant, response, "INVALID_ARGUMENT")


async def post_signed(server: GatewayServer, body: bytes) -> httpx.Response:
    signature = sign_sandbox(SANDBOX_SECRET, int(server.clock.now().timestamp()), body)
    return await server.client.post(
        "/hooks/sandbox", content=body, headers={SIGNATURE: signature.encode()}
    )


BAD_CALLBACKS = {
    "invalid UTF-8 in text": encode(inbound_event(1, NUMBER)).replace(b'"hi"', b'"\xff"'),
    "deep nesting in an unknown field": with_field(
        encode(inbound_event(1, NUMBER)), encode(deep(10_000))
    ),
    "deep nesting as the event tag": b'{"event":' + encode(deep(10_000)) + b"}",
    # msgspec skips an unknown field without checking its UTF-8: it was answered 200 and kept.
    "invalid UTF-8 in an unknown field": with_field(
        encode(inbound_event(1, "+15550009999")), b'"\xff"'
    ),
    # msgspec took any int and SQLite raised OverflowError: it was answered 500.
    "parts above int64": encode(status_event(1)).replace(b'"parts":1', b'"parts":' + b"9" * 19),
    "parts of zero": encode(status_event(1)).replace(b'"parts":1', b'"parts":0'),
}


@pytest.mark.parametrize("body", BAD_CALLBACKS.values(), ids=BAD_CALLBACKS.keys())
async def test_signed_callback_that_is_not_json_is_400(
    start_gateway: ServerFactory, body: bytes
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant(NUMBER)
    response = await post_signed(server, body)
    await assert_refused_and_nothing_stored(server, tenant, response, "INVALID_CALLBACK")
