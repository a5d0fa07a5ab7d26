"""`bridge mappings check`: the tiers, products and add-ons as the bridge reads them."""

from __future__ import annotations

import json

import click

from bridge.cli.base import Context, pass_ctx, table
from bridge.mappings import resolve
from bridge.mappings.bundles import QuotaBundle, format_quota


@click.group()
def mappings() -> None:
    """Product tiers and add-ons."""


@mappings.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def mappings_check(ctx: Context, as_json: bool) -> None:
    """Validate the mappings and print the resolved table."""
    m = ctx.settings.mappings
    products = {
        source: {
            pid: {"tier": tier, "bundle": resolve(m, source, pid).bundle.as_dict()}
            for pid, tier in table.items()
        }
        for source, table in m.products.items()
    }
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tiers": {name: b.as_dict() for name, b in m.tiers.items()},
                    "products": products,
                    "addons": {
                        s: {n: b.as_dict() for n, b in t.items()} for s, t in m.addons.items()
                    },
                },
                indent=2,
            )
        )
        return
    names = QuotaBundle.field_names()
    rows = [(name, *[format_quota(v) for v in b.as_dict().values()]) for name, b in m.tiers.items()]
    table("Tiers", ("tier", *names), rows)
    rows = [(s, pid, str(p["tier"])) for s, table in products.items() for pid, p in table.items()]
    table("Products", ("source", "product", "tier"), rows)
    rows = [
        (s, n, *[format_quota(v) for v in b.as_dict().values()])
        for s, table in m.addons.items()
        for n, b in table.items()
    ]
    table("Add-ons (per unit)", ("source", "option", *names), rows)
    click.echo(
        f"mappings OK: {len(m.tiers)} tiers, {sum(len(t) for t in m.products.values())} "
        f"products, {sum(len(t) for t in m.addons.values())} add-ons"
    )
