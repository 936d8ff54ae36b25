"""Carrier adapters, one module each, behind the `Carrier` protocol in `base.py`."""

# Names a number may be given with `gateway numbers add --carrier`; adapters land per step.
KNOWN_CARRIERS = ("sandbox", "twilio", "telnyx", "vonage", "plivo", "sinch", "messagebird")
