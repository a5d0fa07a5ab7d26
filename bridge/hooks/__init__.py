"""Billing-system adapters. Adding one = one module, one entry here, one test module."""

from __future__ import annotations

from bridge.hooks.base import Adapter
from bridge.hooks.blesta import BlestaAdapter
from bridge.hooks.whmcs import WhmcsAdapter

ADAPTERS: dict[str, Adapter] = {
    "whmcs": WhmcsAdapter(),
    "blesta": BlestaAdapter(),
}
