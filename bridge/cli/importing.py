"""`bridge import whmcs|nms`: adopt accounts that already exist on the mail server."""

from __future__ import annotations

import json
import sys
import time

import click

from bridge.cli.base import Context, actor, clean, or_fail, pass_ctx


@click.group("import")
def import_() -> None:
    """Adopt accounts that already exist on the mail server (never creates twice)."""


@import_.command("whmcs")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="WHMCS products/services export (id, pid, email, username, status, ...; "
    "server_module and configoption1 columns turn on the migration checklist).",
)
@click.option("--source", default="whmcs", show_default=True, help="Source name in the config.")
@click.option("--apply", is_flag=True, help="Fix drift on the mail server (default: report only).")
@click.option(
    "--batch", default=50, show_default=True, type=click.IntRange(1), help="Rows per batch."
)
@click.option(
    "--pause",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds to pause between batches (watch the server's load).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, then a summary.")
@pass_ctx
def import_whmcs(
    ctx: Context,
    csv_path: str,
    source: str,
    apply: bool,
    batch: int,
    pause: float,
    as_json: bool,
) -> None:
    """Link WHMCS services to their existing DomainAdmins and report drift.

    Safe to run again: rows already linked are reported as such, nothing is duplicated.
    Every link and every --apply reconcile is in the audit log, by cli:<your OS user>.
    """
    from pathlib import Path

    from bridge.support import importer

    settings = ctx.settings
    if source not in settings.sources:
        raise click.BadParameter(f'no source "{source}" in the config', param_hint="--source")
    addon_names = list(settings.mappings.addons.get(source, {}))
    try:
        rows = importer.read_whmcs_csv(Path(csv_path).read_text(encoding="utf-8"), addon_names)
    except importer.CsvImportError as exc:
        raise click.ClickException(exc.message) from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{csv_path} is not UTF-8 text") from None
    rt = ctx.runtime()
    click.echo(f"reading the DomainAdmins on {settings.mailserver.base_url} ...", err=True)
    index = or_fail(lambda: importer.server_index(rt.mailserver))
    results = []
    who = actor()
    with click.progressbar(
        length=len(rows), label="importing", file=sys.stderr, show_pos=True, show_eta=True
    ) as bar:
        for number, chunk in enumerate(importer.batches(rows, batch)):
            if number and pause:
                time.sleep(pause)
            for row in chunk:
                result = importer.import_row(rt, source, row, index, apply, who)
                results.append(result)
                if as_json:
                    click.echo(json.dumps(result.__dict__, default=list))
                bar.update(1)
    counts = importer.summarize(results)
    todo = importer.checklist(rows, settings.mappings.tiers)
    unknown = importer.unknown_to_billing(rt, source, index)
    summary = {
        "adopted": counts["adopted"],
        "already_linked": counts["already_linked"],
        "missing_on_server": counts["missing_on_server"],
        "unknown_to_billing": len(unknown),
        "drift": counts["drift"],
        "skipped": counts["skipped"],
        "errors": counts["error"],
        "checklist": len(todo),
    }
    if as_json:
        for item in todo:
            click.echo(json.dumps({"checklist": item.__dict__}, default=list))
        click.echo(json.dumps({"summary": summary}))
    else:
        for result in results:
            if result.outcome in ("missing_on_server", "error") or result.drift:
                click.echo(
                    f"line {result.line} {source}:{clean(result.service_ref)} "
                    f"({clean(result.username)}): {result.outcome} {clean(result.message)}".rstrip()
                )
                for line in result.drift:
                    click.echo(f"    {clean(line)}")
        for item in todo:
            click.echo(f"checklist (step {item.step}): {clean(item.message)}")
        click.echo(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items()))
        if counts["drift"] and not apply:
            click.echo("drift was only reported; run again with --apply to fix it")
        if todo:
            click.echo(
                "the migration is not finished: see the checklist lines above "
                "(docs/migrating-from-mailcheap-plugin.md, step 4)"
            )
    if counts["error"]:
        sys.exit(1)


@import_.command("nms")
@click.option(
    "--source",
    required=True,
    help="The billing source (a name under sources: in the config) to compare with.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def import_nms(ctx: Context, source: str, as_json: bool) -> None:
    """Compare the mail server's DomainAdmins with the ledger's services of SOURCE.

    Lists, with what to do about each: the accounts this source's services name, those that
    belong to another source, those no billing service names, and this source's services
    whose account is missing on the server. Reads only; changes nothing.
    """
    from bridge.support import importer

    settings = ctx.settings
    if source not in settings.sources:
        raise click.BadParameter(
            f'no source "{source}"; configured: {", ".join(settings.sources)}',
            param_hint="--source",
        )
    rt = ctx.runtime()
    index = or_fail(lambda: importer.server_index(rt.mailserver))
    found = importer.compare_server(rt, source, index)
    advice = _advice(source)
    if as_json:
        report = {
            "source": source,
            "linked": found.linked,
            "other_source": found.other_source,
            "unknown_to_billing": found.unknown,
            "missing_on_server": found.missing_on_server,
            "advice": advice,
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{len(index)} DomainAdmin(s) on {settings.mailserver.base_url}, compared with the "
        f"{source} services in the ledger:"
    )
    sections = (
        (f"named by a {source} service", "linked", list(found.linked)),
        (
            "named by a service of another source",
            "other_source",
            [f"{name} ({label})" for name, label in found.other_source.items()],
        ),
        ("named by no service the bridge knows", "unknown_to_billing", found.unknown),
        (
            f"{source} services whose DomainAdmin is not on the server",
            "missing_on_server",
            [f"{label} ({name})" for label, name in found.missing_on_server.items()],
        ),
    )
    for title, key, names in sections:
        click.echo(f"\n{title}: {len(names)}")
        if not names:
            continue
        click.echo(f"  {advice[key]}")
        if key != "linked":
            for name in names:
                click.echo(f"    {name}")


def _advice(source: str) -> dict[str, str]:
    """What to do with each category (never a deletion: an account is a customer's mail)."""
    return {
        "linked": "nothing to do",
        "other_source": "each belongs to the service shown, of another billing source; nothing "
        "to do here (`bridge import nms --source THAT_SOURCE` checks them)",
        "unknown_to_billing": "no service the bridge knows names these accounts, and the bridge "
        "never changes one no service is bound to. If one is a customer's, bind it to its "
        "billing service (`bridge services link SOURCE ID USERNAME`, or import the billing "
        "export with `bridge import whmcs --csv FILE`); otherwise leave it as it is",
        "missing_on_server": f"billing wants an account the server does not have: look at "
        f"`bridge services show {source} ID`, then `bridge reconcile {source} ID` makes the "
        "server match billing",
    }
