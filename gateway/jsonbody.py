"""Untrusted JSON bodies into typed Structs, telling "not JSON" from "JSON of the wrong shape"."""

from __future__ import annotations

import hashlib
from typing import TypeVar

import msgspec

T = TypeVar("T")

# Malformed input can make the decoder raise more than DecodeError: invalid UTF-8 bytes raise
# UnicodeDecodeError and absurd nesting RecursionError. All of them mean "not JSON".
_NOT_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)

_any_decoder = msgspec.json.Decoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")


class NotJson(ValueError):
    """The body is not valid JSON."""


class WrongShape(ValueError):
    """The body is JSON, but not of the expected shape."""


def decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        if _is_json(body):
            raise WrongShape(str(exc)) from exc
        raise NotJson(str(exc)) from exc
    except _NOT_JSON as exc:
        raise NotJson(str(exc) or type(exc).__name__) from exc
    # A typed decode skips unknown fields unread; the whole body must still be JSON.
    if not _is_json(body):
        raise NotJson("the body holds invalid JSON in a field that is otherwise ignored")
    return value


def _is_json(body: bytes) -> bool:
    try:
        _any_decoder.decode(body)
    except _NOT_JSON:
        return False
    return True


def value_hash(body: bytes) -> str:
    """A hash of the JSON value, equal for equal values whatever the key order or spacing."""
    try:
        # Typed decoding skips unknown fields unread; this reads all, so it can still refuse.
        value = _any_decoder.decode(body)
    except _NOT_JSON as exc:
        raise NotJson(str(exc) or type(exc).__name__) from exc
    return hashlib.sha256(_sorted_encoder.encode(value)).hexdigest()
