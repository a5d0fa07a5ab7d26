"""`bridge mappings check`: the tiers, products and add-ons as the bridge reads them."""

from __future__ import annotations

import json
import sys

import click

from bridge.cli.base import Context, pass_ctx, table
from bridge.mappings import MappingError, Resolution, refuse_ambiguous_zero, resolve
from bridge.mappings.bundles import QuotaBundle, format_quota


@click.group()
def mappings() -> None:
    """Product tiers and add-ons."""


@mappings.command("check")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def mappings_check(ctx: Context, as_json: bool) -> None:
    """Validate the mappings and print the resolved table.

    A tier with a quota of 0 is refused (exit status 1) unless `bridge check-server` saw
    the mail server read 0 as "none allowed": some servers read it as unlimited.
    """
    m = ctx.settings.mappings
    refused = _zero_refusals(ctx)
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
                    "refused": [
                        {"tier": tier, "reason": exc.reason, "message": exc.message}
                        for tier, exc in refused
                    ],
                },
                indent=2,
            )
        )
        if refused:
            sys.exit(1)
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
    if refused:
        for _tier, exc in refused:
            click.echo(f"refused: {exc.reason}: {exc.message}")
        raise click.ClickException(f"{len(refused)} tier(s) refused; see above")
    click.echo(
        f"mappings OK: {len(m.tiers)} tiers, {sum(len(t) for t in m.products.values())} "
        f"products, {sum(len(t) for t in m.addons.values())} add-ons"
    )


def _zero_refusals(ctx: Context) -> list[tuple[str, MappingError]]:
    """Tiers with a 0 the mail server may read as unlimited (the stored server profile)."""
    tiers = ctx.settings.mappings.tiers
    if not any(0 in b.as_dict().values() for b in tiers.values()):
        return []  # nothing to ask the database
    from sqlalchemy.exc import SQLAlchemyError

    from bridge.mailserver.profile import load_profile

    try:
        with ctx.runtime().reads() as session:
            profile = load_profile(session, ctx.settings.mailserver.base_url)
    except SQLAlchemyError:
        profile = None  # no database yet: as if check-server had not run
    refused = []
    for name, bundle in tiers.items():
        try:
            refuse_ambiguous_zero(
                Resolution(name, bundle, {}), profile.zero_quota if profile else None
            )
        except MappingError as exc:
            refused.append((name, exc))
    return refused
