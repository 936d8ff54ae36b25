"""Customer authentication over real HTTP: where credentials may travel, which tokens pass.

Contract (message-api.md, "Authentication" and section 7): a HS256 JWT signed with the server's
secret in `?token=`, `Authorization: Bearer` or a `token` cookie, or an access key in
`?accesskey=`. Missing credentials are 401 AUTHENTICATION_REQUIRED; anything bad, expired or of
another algorithm (including `alg: none`) is 401 INVALID_CREDENTIALS, as is a valid token naming an
unknown customer or carrying no `exp`. Tokens shaped like the seed's (`customer` claim holding a
JSON string with the customer's `id`) are accepted.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from gateway.auth import issue_token
from gateway.clock import ManualClock
from tests.conftest import JWT_SECRET, SHARED, GatewayServer, ServerFactory, Tenant
from tests.test_api_messages import assert_error

SEED = SHARED / "seed" / "000_36addfe472cc594b.txt"
SEED_CUSTOMER_ID = "5e4a0680-804e-11ec-8477-2fea5968d85b"
OTHER_SECRET = "a-different-secret-that-is-also-long-enough-for-hs256"
HOUR_S = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(
    header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None
) -> str:
    """A compact JWS built without PyJWT, so any header or signature can be forged."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = b64url(sign(signing_input.encode())) if sign is not None else ""
    return f"{signing_input}.{signature}"


def hmac_signer(secret: str, digest: str) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret.encode(), data, digest).digest()


def seed_token() -> str:
    """The token VoIPBIN's own tutorial uses (signed with VoIPBIN's key, expired in 2022)."""
    found = re.search(r"token=(eyJ[\w-]+\.[\w-]+\.[\w-]+)", SEED.read_text())
    assert found is not None
    return found.group(1)


def seed_shaped_claims(customer_id: str, exp: int) -> dict[str, Any]:
    """The seed token's claims, with its customer's id replaced."""
    claims: dict[str, Any] = jwt.decode(seed_token(), options={"verify_signature": False})
    customer = json.loads(claims["customer"])
    customer["id"] = customer_id
    return {"customer": json.dumps(customer, separators=(",", ":")), "exp": exp}


def assert_unauthenticated(response: httpx.Response, reason: str, *hidden: str) -> None:
    """401 in the envelope; nothing the caller sent, nor the server's secret, is echoed."""
    assert_error(response, 401, "UNAUTHENTICATED", reason)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == response.json()["error"]["request_id"]
    for value in (JWT_SECRET, *hidden):
        assert value not in response.text
        assert all(value not in header for header in response.headers.values())


async def listed_ids(server: GatewayServer, tenant: Tenant) -> list[str]:
    """The tenant's messages as its access key sees them (never expires with the clock)."""
    page = await server.client.get("/v1.0/messages", params={"accesskey": tenant.access_key})
    assert page.status_code == 200, page.text
    return [m["id"] for m in page.json()["result"]]


def send_body(tenant: Tenant) -> dict[str, Any]:
    return {
        "source": {"type": "tel", "target": tenant.number},
        "destinations": [{"type": "tel", "target": "+15550000002"}],
        "text": "hello",
    }


# Missing credentials ---------------------------------------------------------------------------


async def test_missing_credentials_are_authentication_required_on_every_endpoint(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    some_id = str(uuid.uuid4())
    responses = [
        await server.client.get("/v1.0/messages"),
        await server.client.get("/v1.0/messages", params={"token": ""}),
        await server.client.get("/v1.0/messages", params={"accesskey": ""}),
        await server.client.post("/v1.0/messages", json=send_body(tenant)),
        await server.client.get(f"/v1.0/messages/{some_id}"),
        await server.client.delete(f"/v1.0/messages/{some_id}"),
        # Authentication comes first: an unauthenticated caller learns nothing about the request.
        await server.client.get("/v1.0/messages/not-a-uuid"),
        await server.client.get("/v1.0/messages", params={"page_size": "ten"}),
        await server.client.post(
            "/v1.0/messages", content=b"{not json", headers={"content-type": "application/json"}
        ),
    ]
    for response in responses:
        assert_unauthenticated(response, "AUTHENTICATION_REQUIRED")
    assert await listed_ids(server, tenant) == []


# Accepted credentials --------------------------------------------------------------------------


async def test_a_token_works_in_query_bearer_header_and_cookie(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    ways: dict[str, dict[str, Any]] = {
        "query": {"params": {"token": tenant.token}},
        "bearer": {"headers": {"Authorization": f"Bearer {tenant.token}"}},
        "bearer-lower-case": {"headers": {"authorization": f"bearer {tenant.token}"}},
        "cookie": {"headers": {"Cookie": f"token={tenant.token}"}},
        "accesskey": {"params": {"accesskey": tenant.access_key}},
    }
    sent_ids = []
    for way, credentials in ways.items():
        sent = await server.client.post("/v1.0/messages", json=send_body(tenant), **credentials)
        assert sent.status_code == 200, (way, sent.text)
        assert sent.json()["customer_id"] == tenant.id
        sent_ids.append(sent.json()["id"])
        got = await server.client.get(f"/v1.0/messages/{sent_ids[-1]}", **credentials)
        assert got.status_code == 200, (way, got.text)
        assert got.json()["customer_id"] == tenant.id
    listed = await server.client.get("/v1.0/messages", params={"token": tenant.token})
    assert [m["id"] for m in listed.json()["result"]] == sent_ids[::-1]


async def test_query_token_takes_precedence_and_each_customer_sees_only_its_own(
    start_gateway: ServerFactory,
) -> None:
    server = await start_gateway(run_workers=False)
    alice = await server.add_tenant("+15550000001")
    bob = await server.add_tenant("+15550000003")
    alices = (await server.send(alice, ["+15550000002"])).json()
    bobs = (await server.send(bob, ["+15550000002"])).json()
    # ?token= wins over the header and the cookie.
    response = await server.client.get(
        "/v1.0/messages",
        params={"token": alice.token},
        headers={"Authorization": f"Bearer {bob.token}", "Cookie": f"token={bob.token}"},
    )
    assert [m["id"] for m in response.json()["result"]] == [alices["id"]]
    # The Bearer header wins over the cookie.
    response = await server.client.get(
        "/v1.0/messages",
        headers={"Authorization": f"Bearer {bob.token}", "Cookie": f"token={alice.token}"},
    )
    assert [m["id"] for m in response.json()["result"]] == [bobs["id"]]


async def test_a_seed_shaped_token_signed_with_the_server_secret_is_accepted(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    exp = int(manual_clock.now().timestamp()) + HOUR_S
    claims = seed_shaped_claims(tenant.id, exp)
    customer = json.loads(claims["customer"])
    assert customer["id"] == tenant.id
    assert customer["username"] == "admin"
    assert customer["permission_ids"] == ["03796e14-7cb4-11ec-9dba-e72023efd1c6"]
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    sent = await server.client.post(
        "/v1.0/messages", params={"token": token}, json=send_body(tenant)
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["customer_id"] == tenant.id
    listed = await server.client.get("/v1.0/messages", headers={"Authorization": f"Bearer {token}"})
    assert [m["id"] for m in listed.json()["result"]] == [sent.json()["id"]]


async def test_a_seed_shaped_token_naming_an_unknown_customer_is_refused(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    await server.add_tenant("+15550000001")
    exp = int(manual_clock.now().timestamp()) + HOUR_S
    token = jwt.encode(seed_shaped_claims(SEED_CUSTOMER_ID, exp), JWT_SECRET, algorithm="HS256")
    response = await server.client.get("/v1.0/messages", params={"token": token})
    assert_unauthenticated(response, "INVALID_CREDENTIALS", token, SEED_CUSTOMER_ID)


# Refused tokens --------------------------------------------------------------------------------

TokenFactory = Callable[[str, int], str]  # (customer id, a future exp) -> token


def _alg_none(customer_id: str, exp: int) -> str:
    header = {"alg": "none", "typ": "JWT"}
    return hand_made_token(header, {"customer_id": customer_id, "exp": exp}, None)


def _alg_none_capitalised(customer_id: str, exp: int) -> str:
    header = {"alg": "None", "typ": "JWT"}
    return hand_made_token(header, {"customer_id": customer_id, "exp": exp}, None)


def _hs512_with_server_secret(customer_id: str, exp: int) -> str:
    header = {"alg": "HS512", "typ": "JWT"}
    claims = {"customer_id": customer_id, "exp": exp}
    return hand_made_token(header, claims, hmac_signer(JWT_SECRET, "sha512"))


def _rs256_header_hmac_signature(customer_id: str, exp: int) -> str:
    # Algorithm confusion: an RS256 header over an HMAC made with the server's secret.
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {"customer_id": customer_id, "exp": exp}
    return hand_made_token(header, claims, hmac_signer(JWT_SECRET, "sha256"))


def _wrong_key(customer_id: str, exp: int) -> str:
    return jwt.encode({"customer_id": customer_id, "exp": exp}, OTHER_SECRET, algorithm="HS256")


def _no_exp(customer_id: str, exp: int) -> str:
    return jwt.encode({"customer_id": customer_id}, JWT_SECRET, algorithm="HS256")


def _exp_as_text(customer_id: str, exp: int) -> str:
    claims = {"customer_id": customer_id, "exp": str(exp)}
    return hand_made_token(
        {"alg": "HS256", "typ": "JWT"}, claims, hmac_signer(JWT_SECRET, "sha256")
    )


def _unknown_customer(customer_id: str, exp: int) -> str:
    return jwt.encode({"customer_id": str(uuid.uuid4()), "exp": exp}, JWT_SECRET, algorithm="HS256")


def _no_customer_claim(customer_id: str, exp: int) -> str:
    return jwt.encode({"sub": customer_id, "exp": exp}, JWT_SECRET, algorithm="HS256")


def _customer_claim_without_id(customer_id: str, exp: int) -> str:
    claims = {"customer": json.dumps({"username": "admin"}), "exp": exp}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _customer_claim_not_json(customer_id: str, exp: int) -> str:
    claims = {"customer": "{id: " + customer_id, "exp": exp}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _tampered_payload(customer_id: str, exp: int) -> str:
    # A real token for someone else, its payload swapped for this customer's: the signature breaks.
    header, _, signature = jwt.encode(
        {"customer_id": str(uuid.uuid4()), "exp": exp}, JWT_SECRET, algorithm="HS256"
    ).split(".")
    payload = b64url(json.dumps({"customer_id": customer_id, "exp": exp}).encode())
    return f"{header}.{payload}.{signature}"


def _seed_token(customer_id: str, exp: int) -> str:
    return seed_token()


def _not_a_jwt(customer_id: str, exp: int) -> str:
    return "not-a-jwt"


BAD_TOKENS: dict[str, TokenFactory] = {
    "alg-none": _alg_none,
    "alg-None": _alg_none_capitalised,
    "hs512": _hs512_with_server_secret,
    "rs256-confusion": _rs256_header_hmac_signature,
    "wrong-key": _wrong_key,
    "no-exp": _no_exp,
    "exp-as-text": _exp_as_text,
    "unknown-customer": _unknown_customer,
    "no-customer-claim": _no_customer_claim,
    "customer-claim-without-id": _customer_claim_without_id,
    "customer-claim-not-json": _customer_claim_not_json,
    "tampered-payload": _tampered_payload,
    "seed-token": _seed_token,
    "not-a-jwt": _not_a_jwt,
}


def by_query(token: str) -> dict[str, Any]:
    return {"params": {"token": token}}


def by_bearer(token: str) -> dict[str, Any]:
    return {"headers": {"Authorization": f"Bearer {token}"}}


def by_cookie(token: str) -> dict[str, Any]:
    return {"headers": {"Cookie": f"token={token}"}}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_bad_token_is_invalid_credentials_and_stores_nothing(
    start_gateway: ServerFactory, manual_clock: ManualClock, make_token: TokenFactory
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    token = make_token(tenant.id, int(manual_clock.now().timestamp()) + HOUR_S)
    for carry in (by_query, by_bearer, by_cookie):
        sent = await server.client.post("/v1.0/messages", json=send_body(tenant), **carry(token))
        assert_unauthenticated(sent, "INVALID_CREDENTIALS", token)
        listed = await server.client.get("/v1.0/messages", **carry(token))
        assert_unauthenticated(listed, "INVALID_CREDENTIALS", token)
    assert await listed_ids(server, tenant) == []
    assert await server.gateway.store.list_messages(tenant.id, 100, None) == []


async def test_the_seed_token_itself_is_refused(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    token = seed_token()
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] == 1647784684  # 2022-03-20
    assert json.loads(claims["customer"])["id"] == SEED_CUSTOMER_ID
    response = await server.client.get("/v1.0/messages", params={"token": token})
    assert_unauthenticated(response, "INVALID_CREDENTIALS", token)
    assert await listed_ids(server, tenant) == []


async def test_a_token_expires_exactly_at_exp_by_the_gateway_clock(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    token = issue_token(JWT_SECRET, tenant.id, 1.0, manual_clock)
    exp = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_exp": False})["exp"]
    assert exp == int(manual_clock.now().timestamp()) + HOUR_S
    manual_clock.advance(HOUR_S - 1)
    alive = await server.client.get("/v1.0/messages", params={"token": token})
    assert alive.status_code == 200, alive.text
    manual_clock.advance(1)
    at_exp = await server.client.get("/v1.0/messages", params={"token": token})
    assert_unauthenticated(at_exp, "INVALID_CREDENTIALS", token)
    manual_clock.advance(HOUR_S)
    for carry in (by_query, by_bearer, by_cookie):
        sent = await server.client.post("/v1.0/messages", json=send_body(tenant), **carry(token))
        assert_unauthenticated(sent, "INVALID_CREDENTIALS", token)
    assert await listed_ids(server, tenant) == []


async def test_an_expired_seed_shaped_token_is_refused(
    start_gateway: ServerFactory, manual_clock: ManualClock
) -> None:
    server = await start_gateway(clock=manual_clock, run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    exp = int(manual_clock.now().timestamp()) - 1
    token = jwt.encode(seed_shaped_claims(tenant.id, exp), JWT_SECRET, algorithm="HS256")
    response = await server.client.get("/v1.0/messages", params={"token": token})
    assert_unauthenticated(response, "INVALID_CREDENTIALS", token)


# Access keys and the Authorization header ------------------------------------------------------


async def test_an_unknown_access_key_is_invalid_credentials(start_gateway: ServerFactory) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    for key in ("ak_" + "x" * 43, tenant.access_key + "x", tenant.access_key.upper(), "ak_"):
        sent = await server.client.post(
            "/v1.0/messages", params={"accesskey": key}, json=send_body(tenant)
        )
        assert_unauthenticated(sent, "INVALID_CREDENTIALS", key, tenant.access_key)
    assert await listed_ids(server, tenant) == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dGVuYW50OnBhc3N3b3JkLXRoYXQtaXMtc2VjcmV0",
        "Basic {token}",
        "Bearer",
        "Token {token}",
        "{token}",
    ],
)
async def test_an_authorization_header_other_than_bearer_is_refused(
    start_gateway: ServerFactory, authorization: str
) -> None:
    server = await start_gateway(run_workers=False)
    tenant = await server.add_tenant("+15550000001")
    value = authorization.format(token=tenant.token)
    sent = await server.client.post(
        "/v1.0/messages", headers={"Authorization": value}, json=send_body(tenant)
    )
    hidden = [tenant.token, "dGVuYW50OnBhc3N3b3JkLXRoYXQtaXMtc2VjcmV0"]
    assert_unauthenticated(sent, "INVALID_CREDENTIALS", *hidden)
    assert await listed_ids(server, tenant) == []
