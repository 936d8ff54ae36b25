"""Carrier adapters, one module each, behind the `Carrier` protocol in `base.py`."""
