"""A tiny customer webhook receiver for the demo: prints each event and checks its signatures.

python -m gateway.tools.receiver --port 9000 --secret whsec_...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gateway import signing


def _verdict(secret: str, headers: dict[str, str], body: bytes) -> str:
    if not secret:
        return "signature not checked (no --secret)"
    try:
        signing.verify_standard_webhook(
            secret,
            headers.get("webhook-id", ""),
            headers.get("webhook-timestamp", ""),
            headers.get("webhook-signature", ""),
            body,
            time.time(),
        )
    except (signing.InvalidSignature, ValueError) as exc:
        return f"SIGNATURE INVALID: {exc}"
    if headers.get("x-voipbin-signature") != signing.voipbin_signature(secret, body):
        return "SIGNATURE INVALID: X-VoIPBIN-Signature"
    return "signatures valid"


def make_handler(secret: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _receive(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                event = json.loads(body)
                data = event["data"]
                statuses = ",".join(t["status"] for t in data["targets"])
                summary = f"{event['type']} {data['id']} {data['direction']} targets={statuses}"
            except (ValueError, KeyError, TypeError):
                summary = f"unreadable body: {body[:200]!r}"
            print(f"{summary}  [{_verdict(secret, headers, body)}]", flush=True)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        do_POST = do_PUT = do_GET = do_DELETE = _receive

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per event is printed above

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print customer webhook events as they arrive")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", default="", help="the customer's webhook_secret (whsec_...)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args.secret))
    print(f"listening on http://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
