"""marshmallow schemas for the `tiers`, `products` and `addons` config sections."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validates_schema

from bridge.mappings.bundles import UNLIMITED, QuotaBundle


class QuotaField(fields.Field[int | str]):
    """An int >= 0 or the word `unlimited`; never a magic 0 or -1."""

    default_error_messages = {
        "invalid": 'must be a whole number >= 0 or "unlimited"',
    }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> int | str:
        if value == UNLIMITED:
            return UNLIMITED
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.make_error("invalid")
        return value


class BundleSchema(Schema):
    """A tier bundle: every field required, so a tier never silently means 0."""

    class Meta:
        unknown = RAISE

    domains = QuotaField(required=True)
    domain_aliases = QuotaField(required=True)
    aliases = QuotaField(required=True)
    mailboxes = QuotaField(required=True)
    storage_mb = QuotaField(required=True)

    @post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> QuotaBundle:
        return QuotaBundle(**data)


class IncrementSchema(BundleSchema):
    """A per-unit add-on increment: fields left out add nothing."""

    domains = QuotaField(load_default=0)
    domain_aliases = QuotaField(load_default=0)
    aliases = QuotaField(load_default=0)
    mailboxes = QuotaField(load_default=0)
    storage_mb = QuotaField(load_default=0)

    @validates_schema
    def not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not any(v != 0 for v in data.values()):
            raise ValidationError("an add-on must increase at least one field")


class ProductKey(fields.String):
    """Billing product ids: YAML may give them as ints; they are compared as strings."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class MappingsSchema(Schema):
    """The three mapping sections together, so cross-references can be checked."""

    class Meta:
        unknown = RAISE

    tiers = fields.Dict(keys=fields.String(), values=fields.Nested(BundleSchema), required=True)
    products = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=ProductKey(), values=fields.String()),
        load_default=dict,
    )
    addons = fields.Dict(
        keys=fields.String(),
        values=fields.Dict(keys=fields.String(), values=fields.Nested(IncrementSchema)),
        load_default=dict,
    )

    @validates_schema
    def products_name_known_tiers(self, data: dict[str, Any], **kwargs: Any) -> None:
        tiers = data.get("tiers") or {}
        errors: dict[str, Any] = {}
        for source, table in (data.get("products") or {}).items():
            for product, tier in table.items():
                if tier not in tiers:
                    errors.setdefault(source, {})[product] = [
                        f'names tier "{tier}", which is not under tiers:'
                    ]
        if errors:
            raise ValidationError({"products": errors})
