"""What a webhook attempt's answer means: its error class, when to try again, and whether the
endpoint should be disabled. Pure functions (customer-webhooks.md §2-4)."""

from __future__ import annotations

import datetime as dt
import email.utils
import enum
import random

import msgspec

# Timeouts and 429s wait at least this long: the endpoint is overloaded (Svix does the same).
OVERLOAD_PENALTY_S = 60.0
# A Retry-After is honoured up to this far ahead; beyond it the endpoint is asking for too much.
MAX_RETRY_AFTER_S = 86400.0


class ErrorClass(enum.StrEnum):
    NONE = ""
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    REDIRECT = "redirect"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    BLOCKED = "blocked"
    NO_ENDPOINT = "no_endpoint"
    GONE = "gone"  # 410: the endpoint asked to be disabled
    INTERNAL = "internal"  # the gateway failed; logged with a traceback


class Answer(msgspec.Struct, frozen=True):
    """What one attempt got back (status 0 when no HTTP answer came)."""

    status_code: int = 0
    error_class: ErrorClass = ErrorClass.NONE
    error: str = ""
    response_excerpt: str = ""
    retry_after: str = ""  # the raw Retry-After header, if any

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def tells_of_endpoint(self) -> bool:
        """Whether the endpoint's health shows in this answer: not when the gateway itself
        failed, or the customer has no address set (so the circuit breaker ignores those)."""
        return self.error_class not in (ErrorClass.INTERNAL, ErrorClass.NO_ENDPOINT)


def classify(status_code: int) -> ErrorClass:
    if 200 <= status_code < 300:
        return ErrorClass.NONE
    if status_code == 410:
        return ErrorClass.GONE
    if 300 <= status_code < 400:
        return ErrorClass.REDIRECT
    if status_code < 500:
        return ErrorClass.HTTP_4XX
    return ErrorClass.HTTP_5XX


def retry_after_s(header: str, now: dt.datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when unreadable."""
    header = header.strip()
    if header.isascii() and header.isdigit():  # str.isdigit also takes "²"
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay_s(
    scheduled_s: float, answer: Answer, now: dt.datetime, jitter: float, rng: random.Random
) -> float:
    """The wait before the next attempt: the schedule with jitter, stretched for overload and
    for a Retry-After (never shortened by one, never past a day)."""
    delay_s = scheduled_s * (1 + rng.uniform(-jitter, jitter)) if jitter else scheduled_s
    overloaded = answer.status_code == 429 or answer.error_class is ErrorClass.TIMEOUT
    if overloaded:
        delay_s = max(delay_s, OVERLOAD_PENALTY_S)
    asked_s = retry_after_s(answer.retry_after, now) if answer.retry_after else None
    if asked_s is not None:
        delay_s = max(delay_s, min(asked_s, MAX_RETRY_AFTER_S))
    return delay_s


def disable_reason(
    answer: Answer, failing_since: dt.datetime | None, now: dt.datetime, window_s: float
) -> str | None:
    """Why the endpoint should be disabled after this failed attempt, or None to keep it."""
    if answer.error_class is ErrorClass.GONE:
        return "the endpoint answered 410 Gone"
    if failing_since is not None and (now - failing_since).total_seconds() >= window_s:
        days = window_s / 86400
        return f"every attempt failed for {days:g} days (last: {answer.error or 'no answer'})"
    return None
