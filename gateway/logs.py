"""Logging set-up for `gateway serve`: credentials never reach the log."""

from __future__ import annotations

import logging
import re

# Query parameters that carry credentials (VoIPBIN clients put tokens in the URL).
_CREDENTIAL_PARAM = re.compile(r"((?:^|[?&])(?:token|accesskey)=)[^&\s]*", re.IGNORECASE)


def redact_query(text: str) -> str:
    return _CREDENTIAL_PARAM.sub(r"\1***", text)


class RedactCredentials(logging.Filter):
    """Masks token= and accesskey= values in uvicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def configure() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("uvicorn.access").addFilter(RedactCredentials())
    # httpx logs every request URL at INFO; webhook URLs may embed customer credentials.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
