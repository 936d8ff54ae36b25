"""Customer authentication: HS256 JWTs (the gateway's and the seed's shape) and access keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any

import jwt

from gateway.clock import Clock
from gateway.errors import Unauthenticated
from gateway.store import Store

ACCESS_KEY_PREFIX = "ak_"


def new_access_key() -> tuple[str, str]:
    """A fresh access key and the hash that is stored in its place."""
    key = ACCESS_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_access_key(key)


def hash_access_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_token(jwt_secret: str, customer_id: str, ttl_hours: float, clock: Clock) -> str:
    """An HS256 token with the claims `customer_id` and `exp`."""
    expires = clock.now() + dt.timedelta(hours=ttl_hours)
    claims = {"customer_id": customer_id, "exp": int(expires.timestamp())}
    return jwt.encode(claims, jwt_secret, algorithm="HS256")


def _invalid(why: str) -> Unauthenticated:
    return Unauthenticated("INVALID_CREDENTIALS", f"invalid credentials: {why}")


class Authenticator:
    def __init__(self, store: Store, jwt_secret: str, clock: Clock) -> None:
        self._store = store
        self._jwt_secret = jwt_secret
        self._clock = clock

    async def customer_for(self, token: str | None, access_key: str | None) -> str:
        """The authenticated customer's id; raises Unauthenticated."""
        if token:
            customer_id = self._customer_in_token(token)
        elif access_key:
            found = await self._store.customer_for_access_key(hash_access_key(access_key))
            if found is None:
                raise _invalid("unknown access key")
            customer_id = found
        else:
            raise Unauthenticated("AUTHENTICATION_REQUIRED", "send a token or an access key")
        if await self._store.get_customer(customer_id) is None:
            raise _invalid("unknown customer")
        return customer_id

    def _customer_in_token(self, token: str) -> str:
        if not self._jwt_secret:
            raise _invalid("JWT authentication is not configured")
        try:
            # exp is checked against the injected clock below, so tests can freeze time.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                options={"require": ["exp"], "verify_exp": False},
            )
        except jwt.InvalidTokenError as exc:
            raise _invalid(type(exc).__name__) from exc
        exp = claims["exp"]
        if not isinstance(exp, int | float) or exp <= self._clock.now().timestamp():
            raise _invalid("token expired")
        return _customer_claim(claims)


def _customer_claim(claims: dict[str, Any]) -> str:
    """`customer_id` as the gateway issues, or the seed's `customer` JSON string with an `id`."""
    customer_id = claims.get("customer_id")
    if isinstance(customer_id, str) and customer_id:
        return customer_id
    customer = claims.get("customer")
    if isinstance(customer, str):
        try:
            customer = json.loads(customer)
        except ValueError:
            raise _invalid("customer claim is not JSON") from None
    if isinstance(customer, dict) and isinstance(customer.get("id"), str):
        return str(customer["id"])
    raise _invalid("token names no customer")
