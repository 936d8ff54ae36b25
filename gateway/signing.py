"""Signatures: Standard Webhooks v1, VoIPBIN's X-VoIPBIN-Signature and the sandbox carrier's scheme.

Pure functions; every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from gateway.errors import InvalidSignature

__all__ = [
    "InvalidSignature",
    "generate_webhook_secret",
    "sign_sandbox",
    "sign_standard_webhook",
    "standard_webhook_key",
    "timestamp_within",
    "verify_sandbox",
    "verify_standard_webhook",
    "voipbin_signature",
]

WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
TOLERANCE_S = 300


def timestamp_within(now_s: float, timestamp_s: int, max_age_s: float, max_ahead_s: float) -> bool:
    """Whether a signed Unix time is at most max_age_s old and max_ahead_s ahead. Compared, not
    subtracted: `now_s - timestamp_s` overflows a float for a forged 400-digit timestamp."""
    return now_s - max_age_s <= timestamp_s <= now_s + max_ahead_s


def generate_webhook_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 32 random bytes."""
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after whsec_ (bare and unpadded base64 accepted)."""
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    if not encoded:
        raise ValueError("webhook secret is empty")
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not base64") from exc


def sign_standard_webhook(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` entry for one key: `v1,<base64 HMAC-SHA256>`."""
    signed = f"{msg_id}.{timestamp_s}.".encode() + body
    mac = hmac.new(standard_webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_standard_webhook(
    secret: str, msg_id: str, timestamp: str, signature_header: str, body: bytes, now_s: float
) -> None:
    """Raise InvalidSignature unless one v1 entry matches within the 5-minute tolerance."""
    try:
        timestamp_s = int(timestamp)
    except ValueError as exc:
        raise InvalidSignature("webhook-timestamp is not an integer") from exc
    if not timestamp_within(now_s, timestamp_s, TOLERANCE_S, TOLERANCE_S):
        raise InvalidSignature("webhook-timestamp is outside the 5-minute tolerance")
    expected = sign_standard_webhook(secret, msg_id, timestamp_s, body).encode()
    for entry in signature_header.split(" "):
        if entry.startswith("v1,") and hmac.compare_digest(entry.encode(), expected):
            return
    raise InvalidSignature("no webhook-signature entry matches")


def voipbin_signature(secret: str, body: bytes) -> str:
    """X-VoIPBIN-Signature: sha256=<hex HMAC-SHA256(whole secret string, body)>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_sandbox(secret: str, timestamp_s: int, body: bytes) -> str:
    """X-Sandbox-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>."""
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return f"t={timestamp_s},v1={mac.hexdigest()}"


def verify_sandbox(secret: str, header: str, body: bytes, now_s: float) -> None:
    """Raise InvalidSignature unless the header signs `body` within the tolerance."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp_s = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("X-Sandbox-Signature is malformed") from exc
    if not timestamp_within(now_s, timestamp_s, TOLERANCE_S, TOLERANCE_S):
        raise InvalidSignature("X-Sandbox-Signature is stale")
    expected = sign_sandbox(secret, timestamp_s, body).split(",v1=", 1)[1]
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise InvalidSignature("X-Sandbox-Signature does not match")
