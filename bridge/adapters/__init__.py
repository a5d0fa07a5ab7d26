"""Billing-system adapters: each turns one billing system's verified JSON into a BillingEvent.

Adding a billing system = one module here, one entry in ADAPTERS, one test module.
"""

from __future__ import annotations

from bridge.adapters.base import Adapter
from bridge.adapters.blesta import BlestaAdapter
from bridge.adapters.whmcs import WhmcsAdapter

ADAPTERS: dict[str, Adapter] = {
    "whmcs": WhmcsAdapter(),
    "blesta": BlestaAdapter(),
}
