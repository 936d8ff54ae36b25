"""The gateway's own error vocabulary; each class says what the caller should do next.

GatewayError                      anything the gateway raises on purpose
├── ApiError                      answered to an HTTP client as the JSON error envelope
│   ├── InvalidArgument           400: fix the request
│   ├── Unauthenticated           401: send valid credentials
│   ├── PermissionDenied          403: the request is not allowed (e.g. a forged callback)
│   ├── NotFound                  404: no such resource for this caller
│   ├── MethodNotAllowed          405: use another method
│   ├── AlreadyExists             409: the resource or key is taken
│   ├── PayloadTooLarge           413: send a smaller body
│   └── Unavailable               503: retry later
├── ConfigError                   fix the configuration file or environment, then start again
├── StoreError                    the database failed; retry later
├── OwnershipConflict             the number belongs to another customer
├── WebhookAddressBlocked         the webhook URI points at a private or reserved address
└── CarrierError                  a carrier call failed
    ├── CarrierTransientError     retry with backoff until the send deadline
    └── CarrierPermanentError     give up: the target fails with the carrier's code
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ApiError(GatewayError):
    """An error that becomes the contract's JSON error envelope."""

    http_status = 500
    status = "INTERNAL"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class InvalidArgument(ApiError):
    http_status = 400
    status = "INVALID_ARGUMENT"


class Unauthenticated(ApiError):
    http_status = 401
    status = "UNAUTHENTICATED"


class PermissionDenied(ApiError):
    http_status = 403
    status = "PERMISSION_DENIED"


class NotFound(ApiError):
    http_status = 404
    status = "NOT_FOUND"


class MethodNotAllowed(ApiError):
    http_status = 405
    status = "METHOD_NOT_ALLOWED"


class AlreadyExists(ApiError):
    http_status = 409
    status = "ALREADY_EXISTS"


class PayloadTooLarge(ApiError):
    http_status = 413
    status = "INVALID_ARGUMENT"


class ResourceExhausted(ApiError):
    http_status = 429
    status = "RESOURCE_EXHAUSTED"

    def __init__(self, reason: str, message: str, retry_after_s: int) -> None:
        super().__init__(reason, message)
        self.retry_after_s = retry_after_s


class Unavailable(ApiError):
    http_status = 503
    status = "UNAVAILABLE"


class ConfigError(GatewayError):
    """The configuration cannot be used; the message names the key to fix."""


class StoreError(GatewayError):
    """The database did not answer or refused a statement; retry later."""


class OwnershipConflict(GatewayError):
    """A number is already owned by another customer."""


class WebhookAddressBlocked(GatewayError):
    """A webhook URI resolves to an address the SSRF guard refuses."""


class InvalidSignature(GatewayError):
    """A signature is missing, malformed, stale or wrong; refuse the request, store nothing."""


class MalformedCallback(GatewayError):
    """The callback is authentic but cannot be understood; answer 400 and store nothing."""


class CarrierError(GatewayError):
    """A carrier call failed; see the subclass for whether to retry."""

    def __init__(self, message: str, *, error_code: str = "") -> None:
        super().__init__(message)
        self.error_code = error_code


class CarrierTransientError(CarrierError):
    """Timeout, connection failure, 429 or 5xx: retry until the send deadline."""


class CarrierPermanentError(CarrierError):
    """The carrier refused the message for good: mark the target failed."""
