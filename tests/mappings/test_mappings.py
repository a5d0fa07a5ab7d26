"""bridge.mappings: tiers, products and add-ons to quota bundles.

See docs/design.md#tiers-and-add-ons.
"""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from bridge.mappings import UNLIMITED, MappingError, Mappings, QuotaBundle, resolve
from bridge.mappings.schema import MappingsSchema

STARTER = QuotaBundle(domains=1, domain_aliases=1, aliases=10, mailboxes=5, storage_mb=5120)
BUSINESS = QuotaBundle(domains=3, domain_aliases=3, aliases=50, mailboxes=25, storage_mb=51200)
AGENCY = QuotaBundle(
    domains=20, domain_aliases=20, aliases=UNLIMITED, mailboxes=200, storage_mb=512000
)
EXTRA_MAILBOX = QuotaBundle(mailboxes=1, storage_mb=1024)
EXTRA_STORAGE = QuotaBundle(storage_mb=1024)
UNLIMITED_ALIASES = QuotaBundle(aliases=UNLIMITED)

MAPPINGS = Mappings(
    tiers={"starter": STARTER, "business": BUSINESS, "agency": AGENCY},
    products={
        "whmcs": {"1": "starter", "2": "business", "3": "agency"},
        "blesta": {"7": "business"},
    },
    addons={
        "whmcs": {
            "extra_mailboxes": EXTRA_MAILBOX,
            "extra_storage_gb": EXTRA_STORAGE,
            "unlimited_aliases": UNLIMITED_ALIASES,
        },
        "blesta": {"extra_mailboxes": EXTRA_MAILBOX},
    },
)


def reason_of(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(MappingError) as excinfo:
        resolve(MAPPINGS, *args, **kwargs)
    return excinfo.value.reason


# resolve() ---------------------------------------------------------------------------------


def test_tier_from_the_products_table():
    result = resolve(MAPPINGS, "whmcs", "2")
    assert result.tier == "business"
    assert result.bundle == BUSINESS
    assert result.addons == {}


def test_products_are_per_source():
    assert resolve(MAPPINGS, "blesta", "7").tier == "business"
    assert reason_of("blesta", "1") == "unmapped_product"


def test_tier_key_wins_over_the_products_table():
    result = resolve(MAPPINGS, "whmcs", "1", tier_key="agency")
    assert result.tier == "agency"
    assert result.bundle == AGENCY


def test_tier_key_works_for_a_product_not_in_the_table():
    assert resolve(MAPPINGS, "whmcs", "999", tier_key="starter").bundle == STARTER


def test_addon_quantities_add_per_unit_increments():
    result = resolve(
        MAPPINGS, "whmcs", "1", addon_quantities={"extra_mailboxes": 3, "extra_storage_gb": "10"}
    )
    assert result.addons == {"extra_mailboxes": 3, "extra_storage_gb": 10}
    assert result.bundle == QuotaBundle(
        domains=1, domain_aliases=1, aliases=10, mailboxes=5 + 3, storage_mb=5120 + 3072 + 10240
    )


@pytest.mark.parametrize("quantity", [0, "0", "", None, " 0 "])
def test_zero_units_change_nothing(quantity):
    result = resolve(MAPPINGS, "whmcs", "1", addon_quantities={"extra_mailboxes": quantity})
    assert result.bundle == STARTER
    assert result.addons == {}


def test_digit_strings_with_spaces_are_quantities():
    result = resolve(MAPPINGS, "whmcs", "1", addon_quantities={"extra_mailboxes": " 2 "})
    assert result.addons == {"extra_mailboxes": 2}
    assert result.bundle.mailboxes == 7


def test_unmapped_options_are_ignored_whatever_their_value():
    options = {"spam_filter": "Advanced", "backup": "yes", "extra_mailboxes": 1}
    result = resolve(MAPPINGS, "whmcs", "1", addon_quantities=options)
    assert result.addons == {"extra_mailboxes": 1}
    assert result.bundle.mailboxes == 6


def test_addons_are_per_source():
    result = resolve(MAPPINGS, "blesta", "7", addon_quantities={"extra_storage_gb": 5})
    assert result.bundle == BUSINESS  # extra_storage_gb is only mapped for whmcs


def test_unlimited_absorbs_additions():
    result = resolve(MAPPINGS, "whmcs", "3", addon_quantities={"extra_mailboxes": 2})
    assert result.bundle.aliases == UNLIMITED
    assert result.bundle.mailboxes == 202


def test_an_unlimited_addon_makes_the_field_unlimited():
    result = resolve(MAPPINGS, "whmcs", "1", addon_quantities={"unlimited_aliases": 1})
    assert result.bundle == QuotaBundle(
        domains=1, domain_aliases=1, aliases=UNLIMITED, mailboxes=5, storage_mb=5120
    )


def test_zero_units_of_an_unlimited_addon_add_nothing():
    result = resolve(MAPPINGS, "whmcs", "1", addon_quantities={"unlimited_aliases": 0})
    assert result.bundle.aliases == 10


def test_unit_increment_of_unlimited_scaled_by_zero_is_zero():
    assert UNLIMITED_ALIASES.times(0) == QuotaBundle()
    assert UNLIMITED_ALIASES.times(3) == UNLIMITED_ALIASES


@pytest.mark.parametrize("product", ["99", None])
def test_unmapped_product(product):
    with pytest.raises(MappingError, match=f'product "{product}" of source "whmcs" has no tier'):
        resolve(MAPPINGS, "whmcs", product)
    assert reason_of("whmcs", product) == "unmapped_product"


def test_unmapped_product_for_an_unknown_source():
    assert reason_of("hostbill", "1") == "unmapped_product"


def test_unknown_tier():
    with pytest.raises(MappingError, match='tier "platinum"') as excinfo:
        resolve(MAPPINGS, "whmcs", "1", tier_key="platinum")
    assert excinfo.value.reason == "unknown_tier"


@pytest.mark.parametrize(
    ("quantity", "match"),
    [
        ("two", "quantity 'two'"),
        ("2.5", "quantity '2.5'"),
        (2.0, "quantity 2.0"),
        ("-3", "quantity '-3'"),
        (-3, "negative quantity"),
        ([1], "quantity"),
    ],
)
def test_invalid_addon_quantity(quantity, match):
    with pytest.raises(MappingError, match=match) as excinfo:
        resolve(MAPPINGS, "whmcs", "1", addon_quantities={"extra_mailboxes": quantity})
    assert excinfo.value.reason == "invalid_addon_quantity"
    assert "extra_mailboxes" in excinfo.value.message


def test_non_decimal_digits_are_an_invalid_quantity():
    with pytest.raises(MappingError) as excinfo:
        resolve(MAPPINGS, "whmcs", "1", addon_quantities={"extra_mailboxes": "\u00b2"})
    assert excinfo.value.reason == "invalid_addon_quantity"


# MappingsSchema ----------------------------------------------------------------------------


def tree(**changes: Any) -> dict[str, Any]:
    """The three config sections as YAML gives them (product ids as ints)."""
    data: dict[str, Any] = {
        "tiers": {
            "starter": {
                "domains": 1,
                "domain_aliases": 1,
                "aliases": 10,
                "mailboxes": 5,
                "storage_mb": 5120,
            },
            "agency": {
                "domains": 20,
                "domain_aliases": 20,
                "aliases": "unlimited",
                "mailboxes": 200,
                "storage_mb": 512000,
            },
        },
        "products": {"whmcs": {1: "starter", 3: "agency"}},
        "addons": {"whmcs": {"extra_mailboxes": {"mailboxes": 1, "storage_mb": 1024}}},
    }
    data.update(changes)
    return data


def error_paths(messages: Any, path: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as {"tiers.starter.mailboxes": [...]}.

    Dict fields nest entry errors under "value" (and "key"); that level is not a config key.
    """
    if isinstance(messages, list):
        return {path: messages}
    out: dict[str, list[str]] = {}
    for key, value in messages.items():
        if key in ("value", "_schema"):
            sub = path
        else:
            sub = f"{path}.{key}" if path else str(key)
        for p, m in error_paths(value, sub).items():
            out.setdefault(p, []).extend(m)
    return out


def load_errors(data: dict[str, Any]) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as excinfo:
        MappingsSchema().load(data)
    return error_paths(excinfo.value.messages)


def test_schema_loads_bundles_and_string_product_ids():
    loaded = MappingsSchema().load(tree())
    assert loaded["tiers"]["agency"] == QuotaBundle(20, 20, UNLIMITED, 200, 512000)
    assert loaded["products"] == {"whmcs": {"1": "starter", "3": "agency"}}
    assert loaded["addons"]["whmcs"]["extra_mailboxes"] == QuotaBundle(mailboxes=1, storage_mb=1024)
    mappings = Mappings(**loaded)
    assert resolve(mappings, "whmcs", "3", addon_quantities={"extra_mailboxes": 1}).bundle == (
        QuotaBundle(20, 20, UNLIMITED, 201, 513024)
    )


def test_products_and_addons_are_optional():
    loaded = MappingsSchema().load({"tiers": tree()["tiers"]})
    assert loaded["products"] == {} and loaded["addons"] == {}


def test_tiers_are_required():
    assert load_errors({"products": {}}) == {"tiers": ["Missing data for required field."]}


@pytest.mark.parametrize(
    "field", ["domains", "domain_aliases", "aliases", "mailboxes", "storage_mb"]
)
def test_a_tier_missing_a_bundle_field_is_rejected(field):
    data = tree()
    del data["tiers"]["starter"][field]
    assert load_errors(data) == {f"tiers.starter.{field}": ["Missing data for required field."]}


@pytest.mark.parametrize(
    "value", [-1, -5, True, False, "infinite", "Unlimited", "10", 2.5, None, 0.0]
)
def test_a_quota_must_be_a_whole_number_or_unlimited(value):
    data = tree()
    data["tiers"]["starter"]["mailboxes"] = value
    errors = load_errors(data)
    assert list(errors) == ["tiers.starter.mailboxes"]
    if value is not None:
        assert errors["tiers.starter.mailboxes"] == ['must be a whole number >= 0 or "unlimited"']


def test_zero_and_unlimited_are_valid_quotas():
    data = tree()
    data["tiers"]["starter"].update(domain_aliases=0, aliases="unlimited")
    loaded = MappingsSchema().load(data)
    assert loaded["tiers"]["starter"].domain_aliases == 0
    assert loaded["tiers"]["starter"].aliases == UNLIMITED


def test_unknown_bundle_field_is_rejected():
    data = tree()
    data["tiers"]["starter"]["mailbox"] = 5  # typo
    assert load_errors(data) == {"tiers.starter.mailbox": ["Unknown field."]}


def test_a_product_naming_an_unknown_tier_is_rejected():
    data = tree(products={"whmcs": {1: "starter", 4: "platinum"}})
    assert load_errors(data) == {
        "products.whmcs.4": ['names tier "platinum", which is not under tiers:']
    }


def test_addon_fields_left_out_add_nothing():
    data = tree(addons={"whmcs": {"extra_aliases": {"aliases": 5}}})
    assert MappingsSchema().load(data)["addons"]["whmcs"]["extra_aliases"] == QuotaBundle(aliases=5)


@pytest.mark.parametrize(
    "increment", [{}, {"mailboxes": 0}, {"domains": 0, "storage_mb": 0}], ids=["empty", "0", "0s"]
)
def test_an_addon_that_adds_nothing_is_rejected(increment):
    data = tree(addons={"whmcs": {"nothing": increment}})
    assert load_errors(data) == {
        "addons.whmcs.nothing": ["an add-on must increase at least one field"]
    }


def test_an_addon_quota_is_checked_like_a_tier_quota():
    data = tree(addons={"whmcs": {"extra_mailboxes": {"mailboxes": -1}}})
    assert list(load_errors(data)) == ["addons.whmcs.extra_mailboxes.mailboxes"]


def test_unknown_top_level_key_is_rejected():
    assert load_errors(tree(bundles={})) == {"bundles": ["Unknown field."]}
