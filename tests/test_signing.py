"""Signatures against published vectors and the official Standard Webhooks library."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.carriers import sinch, telnyx
from gateway.carriers import vonage as vonage_signing
from gateway.signing import (
    InvalidSignature,
    generate_webhook_secret,
    sign_sandbox,
    sign_standard_webhook,
    standard_webhook_key,
    timestamp_within,
    verify_sandbox,
    verify_standard_webhook,
    voipbin_signature,
)
from tests.conftest import SHARED

VECTORS = SHARED / "spec" / "vectors"


def load_cases(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["cases"]
    assert cases, name
    return cases


STANDARD_CASES = load_cases("standard-webhooks.json")
BODY_HMAC_CASES = load_cases("body-hmac-sha256.json")
VALID_STANDARD_CASES = [case for case in STANDARD_CASES if case["valid"]]

# Vector A, used for the edge cases below.
A = STANDARD_CASES[0]
A_SECRET: str = A["secret"]
A_ID: str = A["msg_id"]
A_TS: int = A["timestamp"]
A_BODY: bytes = A["payload"].encode()
A_SIGNATURE: str = A["webhook_signature"]


def case_id(case: dict[str, Any]) -> str:
    return str(case["name"])


def test_vector_files_hold_what_the_spec_lists() -> None:
    assert len(STANDARD_CASES) == 6
    assert [case["valid"] for case in STANDARD_CASES] == [True, False, True, False, False, True]
    assert A_SIGNATURE == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert len(BODY_HMAC_CASES) == 1


# Standard Webhooks: the vectors through our verifier ----------------------------------------


@pytest.mark.parametrize("case", STANDARD_CASES, ids=case_id)
def test_standard_webhooks_vector_verifies_as_published(case: dict[str, Any]) -> None:
    args = (
        case["secret"],
        case["msg_id"],
        str(case["timestamp"]),
        case["webhook_signature"],
        case["payload"].encode(),
    )
    if case["valid"]:
        verify_standard_webhook(*args, now_s=case["timestamp"])
    else:
        with pytest.raises(InvalidSignature):
            verify_standard_webhook(*args, now_s=case["timestamp"])


@pytest.mark.parametrize("case", VALID_STANDARD_CASES, ids=case_id)
def test_standard_webhooks_signer_reproduces_the_v1_entry(case: dict[str, Any]) -> None:
    signature = sign_standard_webhook(
        case["secret"], case["msg_id"], case["timestamp"], case["payload"].encode()
    )
    v1_entries = [e for e in case["webhook_signature"].split(" ") if e.startswith("v1,")]
    assert signature in v1_entries
    if len(v1_entries) == 1:
        assert signature == case["webhook_signature"]


@pytest.mark.parametrize("case", VALID_STANDARD_CASES, ids=case_id)
def test_official_library_signs_the_vectors_like_we_do(case: dict[str, Any]) -> None:
    # Webhook.sign does not look at the clock, so the published timestamps can be used.
    moment = dt.datetime.fromtimestamp(case["timestamp"], dt.UTC)
    official = Webhook(case["secret"]).sign(case["msg_id"], moment, case["payload"])
    ours = sign_standard_webhook(
        case["secret"], case["msg_id"], case["timestamp"], case["payload"].encode()
    )
    assert official == ours


# Standard Webhooks: the same cases through the official library, re-signed at the real time ---


def case_at(case: dict[str, Any], now_s: int) -> str:
    """The case's signature header re-signed at now_s with our signer.

    Every occurrence of the case's genuine MAC (valid at the vector's own timestamp) is replaced by
    our MAC for now_s; the decoys, the damaged signature and the v2 label stay as they are, so the
    header means the same at now_s as the vector means at its timestamp.
    """
    body = case["payload"].encode()
    then = sign_standard_webhook(case["secret"], case["msg_id"], case["timestamp"], body)
    now = sign_standard_webhook(case["secret"], case["msg_id"], now_s, body)
    if case["valid"]:
        assert then in case["webhook_signature"].split(" ")
    return str(case["webhook_signature"]).replace(then.removeprefix("v1,"), now.removeprefix("v1,"))


@pytest.mark.parametrize("case", STANDARD_CASES, ids=case_id)
def test_official_library_agrees_with_our_signer_at_the_current_time(
    case: dict[str, Any],
) -> None:
    now_s = int(time.time())
    header = case_at(case, now_s)
    body = case["payload"].encode()
    headers = {"webhook-id": case["msg_id"], "webhook-timestamp": str(now_s)}
    headers["webhook-signature"] = header
    official = Webhook(case["secret"])
    if case["valid"]:
        assert official.verify(body, headers) == json.loads(case["payload"])
        verify_standard_webhook(case["secret"], case["msg_id"], str(now_s), header, body, now_s)
    else:
        with pytest.raises(WebhookVerificationError):
            official.verify(body, headers)
        with pytest.raises(InvalidSignature):
            verify_standard_webhook(case["secret"], case["msg_id"], str(now_s), header, body, now_s)


@pytest.mark.parametrize(
    "change",
    ["body", "msg_id", "timestamp", "secret"],
)
def test_official_library_and_ours_both_reject_a_changed_field(change: str) -> None:
    now_s = int(time.time())
    signature = sign_standard_webhook(A_SECRET, A_ID, now_s, A_BODY)
    secret, msg_id, timestamp, body = A_SECRET, A_ID, str(now_s), A_BODY
    if change == "body":
        body = b'{"test": 2432232315}'
    elif change == "msg_id":
        msg_id = "msg_p5jXN8AQM9LWM0D4loKWxJeK"
    elif change == "timestamp":
        timestamp = str(now_s - 1)
    else:
        secret = "whsec_" + base64.b64encode(b"another key, 24 bytes...").decode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)
    with pytest.raises(InvalidSignature):
        verify_standard_webhook(secret, msg_id, timestamp, signature, body, now_s)


def test_official_library_verifies_a_generated_secret_and_an_empty_body() -> None:
    secret = generate_webhook_secret()
    now_s = int(time.time())
    signature = sign_standard_webhook(secret, "msg_empty", now_s, b"")
    headers = {
        "webhook-id": "msg_empty",
        "webhook-timestamp": str(now_s),
        "webhook-signature": signature,
    }
    assert Webhook(secret).verify(b"", headers, json_parse=False) is None
    verify_standard_webhook(secret, "msg_empty", str(now_s), signature, b"", now_s)


# Standard Webhooks: tolerance, timestamps and secrets ----------------------------------------


@pytest.mark.parametrize("offset_s", [-299, -300, 0, 299, 300])
def test_timestamps_within_five_minutes_pass(offset_s: int) -> None:
    verify_standard_webhook(A_SECRET, A_ID, str(A_TS), A_SIGNATURE, A_BODY, A_TS + offset_s)


@pytest.mark.parametrize("offset_s", [-301, 301, -3600, 86400])
def test_timestamps_beyond_five_minutes_fail(offset_s: int) -> None:
    # now_s = A_TS + 301: the signature is 301 s old; A_TS - 301: it is 301 s in the future.
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_standard_webhook(A_SECRET, A_ID, str(A_TS), A_SIGNATURE, A_BODY, A_TS + offset_s)


@pytest.mark.parametrize("timestamp", ["1614265330.0", "1614265330.5", "", "abc", "1e9", " "])
def test_non_integer_timestamp_fails(timestamp: str) -> None:
    with pytest.raises(InvalidSignature):
        verify_standard_webhook(A_SECRET, A_ID, timestamp, A_SIGNATURE, A_BODY, A_TS)


@pytest.mark.parametrize(
    "header",
    ["", "v1,", "v1", "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", A_SIGNATURE[:-4]],
)
def test_missing_empty_or_truncated_signature_fails(header: str) -> None:
    with pytest.raises(InvalidSignature):
        verify_standard_webhook(A_SECRET, A_ID, str(A_TS), header, A_BODY, A_TS)


def test_signature_for_another_id_or_body_fails() -> None:
    with pytest.raises(InvalidSignature):
        verify_standard_webhook(A_SECRET, "msg_other", str(A_TS), A_SIGNATURE, A_BODY, A_TS)
    with pytest.raises(InvalidSignature):
        verify_standard_webhook(A_SECRET, A_ID, str(A_TS), A_SIGNATURE, A_BODY + b" ", A_TS)


@pytest.mark.parametrize("secret", ["", "whsec_"])
def test_empty_secret_is_an_error(secret: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        standard_webhook_key(secret)
    with pytest.raises(ValueError, match="empty"):
        sign_standard_webhook(secret, A_ID, A_TS, A_BODY)
    with pytest.raises(ValueError, match="empty"):
        verify_standard_webhook(secret, A_ID, str(A_TS), A_SIGNATURE, A_BODY, A_TS)


def test_secret_that_is_not_base64_is_an_error() -> None:
    with pytest.raises(ValueError, match="base64"):
        standard_webhook_key("whsec_not base64!")


@pytest.mark.parametrize(("key_length", "padding"), [(31, "=="), (32, "="), (30, "")])
def test_unpadded_and_bare_secrets_work(key_length: int, padding: str) -> None:
    key = bytes(range(1, key_length + 1))
    padded = base64.b64encode(key).decode()
    assert padded[len(padded.rstrip("=")) :] == padding
    expected = sign_standard_webhook("whsec_" + padded, A_ID, A_TS, A_BODY)
    for secret in (padded, "whsec_" + padded.rstrip("="), padded.rstrip("=")):
        assert standard_webhook_key(secret) == key
        assert sign_standard_webhook(secret, A_ID, A_TS, A_BODY) == expected
        verify_standard_webhook(secret, A_ID, str(A_TS), expected, A_BODY, A_TS)


def test_vector_a_secret_unpadded_or_bare_still_verifies() -> None:
    bare = A_SECRET.removeprefix("whsec_")
    verify_standard_webhook(bare, A_ID, str(A_TS), A_SIGNATURE, A_BODY, A_TS)
    assert len(standard_webhook_key(A_SECRET)) == 24


def test_generated_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = generate_webhook_secret(), generate_webhook_secret()
    assert first != second
    for secret in (first, second):
        assert secret.startswith("whsec_")
        encoded = secret.removeprefix("whsec_")
        assert len(encoded) == 44
        assert len(base64.b64decode(encoded, validate=True)) == 32
        assert standard_webhook_key(secret) == base64.b64decode(encoded)


# X-VoIPBIN-Signature ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", BODY_HMAC_CASES, ids=case_id)
def test_voipbin_signature_vector(case: dict[str, Any]) -> None:
    assert case["valid"] is True
    assert voipbin_signature(case["secret"], case["body"].encode()) == case["signature"]


def test_voipbin_signature_keys_with_the_whole_whsec_string() -> None:
    secret = generate_webhook_secret()
    body = b'{"type":"message_created"}'
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert voipbin_signature(secret, body) == "sha256=" + expected
    decoded_key = hmac.new(standard_webhook_key(secret), body, hashlib.sha256).hexdigest()
    assert voipbin_signature(secret, body) != "sha256=" + decoded_key


# Sandbox carrier signature -----------------------------------------------------------------------

SANDBOX_SECRET = "sandbox-secret"
SANDBOX_BODY = b'{"event":"status","id":"sbx_dlr_1","message_id":"sbx_1","status":"delivered"}'
SANDBOX_TS = 1_700_000_000


def test_sandbox_signature_has_the_documented_form() -> None:
    header = sign_sandbox(SANDBOX_SECRET, SANDBOX_TS, SANDBOX_BODY)
    mac = hmac.new(SANDBOX_SECRET.encode(), b"1700000000." + SANDBOX_BODY, hashlib.sha256)
    assert header == f"t=1700000000,v1={mac.hexdigest()}"


@pytest.mark.parametrize("offset_s", [-300, 0, 300])
def test_sandbox_signature_round_trips(offset_s: int) -> None:
    header = sign_sandbox(SANDBOX_SECRET, SANDBOX_TS, SANDBOX_BODY)
    verify_sandbox(SANDBOX_SECRET, header, SANDBOX_BODY, SANDBOX_TS + offset_s)


def test_sandbox_tampered_body_fails() -> None:
    header = sign_sandbox(SANDBOX_SECRET, SANDBOX_TS, SANDBOX_BODY)
    tampered = SANDBOX_BODY.replace(b"delivered", b"failed")
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox(SANDBOX_SECRET, header, tampered, SANDBOX_TS)


def test_sandbox_wrong_secret_fails() -> None:
    header = sign_sandbox("another-secret", SANDBOX_TS, SANDBOX_BODY)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox(SANDBOX_SECRET, header, SANDBOX_BODY, SANDBOX_TS)


def test_sandbox_changed_timestamp_fails() -> None:
    header = sign_sandbox(SANDBOX_SECRET, SANDBOX_TS, SANDBOX_BODY)
    moved = header.replace("t=1700000000", "t=1700000001")
    with pytest.raises(InvalidSignature, match="does not match"):
        verify_sandbox(SANDBOX_SECRET, moved, SANDBOX_BODY, SANDBOX_TS)


@pytest.mark.parametrize("offset_s", [301, -301, 3600])
def test_sandbox_stale_or_future_signature_fails(offset_s: int) -> None:
    header = sign_sandbox(SANDBOX_SECRET, SANDBOX_TS, SANDBOX_BODY)
    with pytest.raises(InvalidSignature, match="stale"):
        verify_sandbox(SANDBOX_SECRET, header, SANDBOX_BODY, SANDBOX_TS + offset_s)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "t=1700000000",
        "v1=00",
        "t=abc,v1=00",
        "t=1700000000.5,v1=00",
        "t=,v1=00",
        "t=1700000000;v1=00",
    ],
)
def test_sandbox_malformed_header_fails(header: str) -> None:
    with pytest.raises(InvalidSignature, match="malformed"):
        verify_sandbox(SANDBOX_SECRET, header, SANDBOX_BODY, SANDBOX_TS)


# Timestamps far out of range ---------------------------------------------------------------------

HUGE_TIMESTAMP = "9" * 400  # int() takes it; float arithmetic with it overflows


def test_a_timestamp_too_large_for_a_float_is_outside_every_window() -> None:
    now_s = 1_700_000_000.0
    assert timestamp_within(now_s, 1_700_000_000 - 300, 300, 300)
    assert not timestamp_within(now_s, 1_700_000_000 - 301, 300, 300)
    assert timestamp_within(now_s, 1_700_000_000 + 60, 300, 60)
    assert not timestamp_within(now_s, 1_700_000_000 + 61, 300, 60)
    assert not timestamp_within(now_s, int(HUGE_TIMESTAMP), 300, 300)
    assert not timestamp_within(now_s, -int(HUGE_TIMESTAMP), 300, 300)


def test_every_signed_timestamp_check_refuses_a_huge_one_as_invalid() -> None:
    """A forged header must be a 403 (InvalidSignature), never an OverflowError (a 500)."""
    now_s = time.time()
    key = Ed25519PrivateKey.generate().public_key()
    sinch_headers = {sinch.SIGNATURE_HEADER: "x", sinch.NONCE_HEADER: "n",
                     sinch.TIMESTAMP_HEADER: HUGE_TIMESTAMP}  # fmt: skip
    telnyx_headers = {telnyx.SIGNATURE_HEADER: "x", telnyx.TIMESTAMP_HEADER: HUGE_TIMESTAMP}
    checks: list[Callable[[], None]] = [
        lambda: verify_sandbox("s", f"t={HUGE_TIMESTAMP},v1=00", b"{}", now_s),
        lambda: verify_standard_webhook(
            generate_webhook_secret(), "msg_1", HUGE_TIMESTAMP, "v1,x", b"{}", now_s
        ),
        lambda: telnyx.verify_signature(key, telnyx_headers, b"{}", now_s),
        lambda: sinch.verify_signature("s", sinch_headers, b"{}", now_s),
        lambda: vonage_signing.verify_params(
            {"sig": "x", "timestamp": HUGE_TIMESTAMP}, "s", "md5hash", now_s
        ),
    ]
    for check in checks:
        with pytest.raises(InvalidSignature, match=r"outside|stale"):
            check()
