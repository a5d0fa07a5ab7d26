"""Product tiers and add-ons to DomainAdmin quota bundles (docs/design.md#tiers-and-add-ons)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError
from bridge.mappings.bundles import UNLIMITED, QuotaBundle

__all__ = [
    "UNLIMITED",
    "Mappings",
    "MappingError",
    "QuotaBundle",
    "Resolution",
    "refuse_ambiguous_zero",
    "resolve",
]


class MappingError(BridgeError):
    """The event's product, tier or add-on cannot be turned into a bundle."""

    http_status = 422


@dataclass(frozen=True)
class Mappings:
    """Tiers, products per source and add-ons per source, as configured."""

    tiers: Mapping[str, QuotaBundle]
    products: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    addons: Mapping[str, Mapping[str, QuotaBundle]] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolution:
    """A resolved bundle and how it was made."""

    tier: str
    bundle: QuotaBundle
    addons: Mapping[str, int]


def _quantity(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, int):
        quantity = raw
    elif isinstance(raw, str) and re.fullmatch(r"[0-9]+", raw.strip()):
        quantity = int(raw.strip())
    elif raw in (None, ""):
        quantity = 0
    else:
        raise MappingError(
            "invalid_addon_quantity",
            f'add-on "{name}" has quantity {raw!r}; a whole number >= 0 is needed',
        )
    if quantity < 0:
        raise MappingError(
            "invalid_addon_quantity", f'add-on "{name}" has a negative quantity ({quantity})'
        )
    return quantity


def resolve(
    mappings: Mappings,
    source: str,
    product_id: str | None,
    tier_key: str | None = None,
    addon_quantities: Mapping[str, Any] | None = None,
) -> Resolution:
    """Turn a billing product (or an explicit tier key) plus add-ons into a quota bundle.

    A tier key named by the product itself (WHMCS `configoption1`) wins over the
    `products` table. Options without an add-on mapping are ignored: billing systems
    attach configurable options that have nothing to do with mail quotas.
    """
    if tier_key:
        if tier_key not in mappings.tiers:
            raise MappingError(
                "unknown_tier",
                f'the product names tier "{tier_key}", which is not configured under tiers:',
            )
        tier = tier_key
    else:
        tier_for_product = mappings.products.get(source, {}).get(str(product_id))
        if tier_for_product is None:
            raise MappingError(
                "unmapped_product",
                f'product "{product_id}" of source "{source}" has no tier; add it under '
                f"products: {source}: in the config, then retry",
            )
        tier = tier_for_product
    bundle = mappings.tiers[tier]
    applied: dict[str, int] = {}
    source_addons = mappings.addons.get(source, {})
    for name, raw in (addon_quantities or {}).items():
        increment = source_addons.get(name)
        if increment is None:
            continue
        quantity = _quantity(name, raw)
        if quantity:
            applied[name] = quantity
            bundle = bundle + increment.times(quantity)
    return Resolution(tier=tier, bundle=bundle, addons=applied)


def refuse_ambiguous_zero(resolution: Resolution, zero_quota: str | None) -> None:
    """Refuse a bundle with a quota of 0 unless the mail server was seen to read 0 as "none".

    `zero_quota` is what `bridge check-server` observed (`ServerProfile.zero_quota`: "zero",
    "unlimited", "refused", "unknown"), None when it has not run. Some servers read 0 as
    unlimited, so sending 0 blind could grant everything (docs/nms-api.md#quota-and-usage-fields).
    """
    zeros = [name for name, value in resolution.bundle.as_dict().items() if value == 0]
    if not zeros or zero_quota == "zero":
        return
    if zero_quota is None:
        why = (
            "whether the mail server reads 0 as none or as unlimited is not known yet: run "
            "`bridge check-server`"
        )
    elif zero_quota == "unlimited":
        why = "this mail server reads 0 as unlimited (bridge check-server)"
    elif zero_quota == "refused":
        why = "this mail server does not accept 0 (bridge check-server)"
    else:
        why = "`bridge check-server` could not tell whether this mail server reads 0 as none"
    raise MappingError(
        "quota_zero_ambiguous",
        f'tier "{resolution.tier}" sets {", ".join(zeros)} to 0, and {why}; or use 1 or more',
    )
