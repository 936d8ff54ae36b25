"""Builds the configured carriers: one module per carrier, each with `from_config`.

Adding a carrier is a module `gateway/carriers/<name>.py` defining
`from_config(section, context) -> Carrier`, a config section in `config.py`, and a sample folder.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

import msgspec

from gateway.carriers.base import Carrier, CarrierContext
from gateway.config import CarriersConfig


class CarrierModule(Protocol):
    def from_config(self, section: msgspec.Struct, context: CarrierContext) -> Carrier: ...


def build_carriers(config: CarriersConfig, context: CarrierContext) -> dict[str, Carrier]:
    carriers: dict[str, Carrier] = {}
    for name, section in config.sections().items():
        module = cast(CarrierModule, importlib.import_module(f"gateway.carriers.{name}"))
        carriers[name] = module.from_config(section, context)
    return carriers
