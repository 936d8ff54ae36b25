"""The one way adapters call a carrier's API: bounded as a whole, failures to reach it transient."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx

from gateway.errors import CarrierTransientError


async def post(
    http: httpx.AsyncClient,
    carrier: str,
    request: tuple[str, dict[str, str], bytes],
    timeout_s: float,
) -> tuple[int, bytes]:
    """POST `(url, headers, body)`; the status code and body, or CarrierTransientError."""
    url, headers, body = request
    try:
        # httpx's timeout bounds each phase; asyncio.timeout bounds the whole call, so the
        # dispatcher's lease always outlives it.
        async with asyncio.timeout(timeout_s):
            response = await http.post(url, content=body, headers=headers, timeout=timeout_s)
    except TimeoutError as exc:
        raise CarrierTransientError(f"{carrier} did not answer in time") from exc
    except (httpx.HTTPError, httpx.InvalidURL, aiohttp.ClientError) as exc:
        raise CarrierTransientError(f"{carrier} unreachable: {type(exc).__name__}") from exc
    return response.status_code, response.content


def raise_if_transient(carrier: str, status_code: int) -> None:
    """429 and 5xx: the carrier is overloaded or failing, so the send is tried again later."""
    if status_code == 429 or status_code >= 500:
        raise CarrierTransientError(f"{carrier} answered {status_code}")
