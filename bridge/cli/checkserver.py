"""`bridge check-server`: what the configured NMS really does where its docs are silent."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import click

from bridge.cli.base import Context, database, pass_ctx, table

if TYPE_CHECKING:
    from bridge.mailserver.probe import ProbeReport


@click.command("check-server")
@click.option(
    "--yes",
    is_flag=True,
    help="Go ahead without asking (needed when not run from a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.option(
    "--probe-rate-limit",
    is_flag=True,
    help="Also cross the server's rate limit once (up to 40 quick reads, stopping at the "
    "first refusal) to see how it answers. Off by default: the NMS bans addresses that "
    "cross it repeatedly.",
)
@pass_ctx
def check_server(ctx: Context, yes: bool, as_json: bool, probe_rate_limit: bool) -> None:
    """Check the configured NMS against what the bridge assumes; store what it does.

    Run it once at install and again after every NMS upgrade. As the MasterAdmin of
    mailserver.base_url it creates two throwaway DomainAdmins (zz-bridge-probe-<hex> and
    zz-bridge-probe-<hex>-2) and a domain (zz-bridge-probe-<hex>.example.com), makes about
    twenty calls within the configured rate limit, and removes all of it at the end, also
    when a step fails or on Ctrl-C. On a server that keeps one token per user, the bridge's
    running processes log in again once afterwards.

    It prints one row per assumption: OK (as assumed), ADAPTED (different; the bridge copes,
    the row says how), BLOCKER (something will fail until a person acts; the row says what
    to do) or NOT PROBED. The observed profile is stored in the database; the bridge sends a
    quota of 0 only when it shows that 0 allows nothing. Exit status 1 on a BLOCKER, an
    interrupted run or anything left behind on the server.
    """
    from bridge.mailserver.probe import Probe
    from bridge.mailserver.profile import load_profile, save_profile

    settings = ctx.settings
    base_url = settings.mailserver.base_url
    rt = ctx.runtime()
    with database(), rt.reads() as session:
        previous = load_profile(session, base_url)  # also: is the schema up to date?
    if not yes:
        what = (
            f"check-server creates and then removes two throwaway DomainAdmins and a domain on "
            f"{base_url}"
        )
        if not sys.stdin.isatty():
            raise click.ClickException(f"{what}; run it with --yes to go ahead")
        click.confirm(f"{what}, and stores what it sees. Go ahead?", abort=True, err=True)
    probe = Probe(rt.mailserver, probe_rate_limit=probe_rate_limit)
    if not as_json:
        click.echo(f"checking {base_url} as {settings.mailserver.username} ...", err=True)
    try:
        report = probe.run()
    except KeyboardInterrupt:
        left = ", ".join(probe.leftovers)
        click.echo(
            "interrupted; nothing stored. "
            + (f"Remove by hand: {left}" if left else "The throwaway accounts were removed."),
            err=True,
        )
        sys.exit(130)
    stored = report.aborted is None
    if stored:
        with database(), rt.transaction() as session:
            save_profile(session, report.profile, [c.as_dict() for c in report.checks])
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "stored": stored}, indent=2))
    else:
        _print(report, stored, previous is not None)
    if not report.passed:
        sys.exit(1)


def _print(report: ProbeReport, stored: bool, replaced: bool) -> None:
    from bridge.mailserver.probe import Verdict

    rows = [(c.label, c.expected, c.observed, c.verdict.value) for c in report.checks]
    table(
        f"{report.profile.base_url} ({report.calls} calls)",
        ("assumption", "expected", "observed", "verdict"),
        rows,
    )
    notes = [c for c in report.checks if c.todo and c.verdict is not Verdict.NOT_PROBED]
    if notes:
        click.secho("What it means", bold=True)
        for c in notes:
            click.echo(f"  {c.verdict.value} {c.label}: {c.todo}")
        click.echo()
    if report.aborted:
        click.echo(f"stopped early: {report.aborted}; nothing stored, run it again")
    if report.leftovers:
        click.echo("could not remove, delete by hand in the NMS: " + ", ".join(report.leftovers))
    else:
        click.echo("throwaway accounts removed")
    if stored:
        click.echo("profile " + ("replaced" if replaced else "stored") + " in the database")
    blockers = len(report.blockers)
    click.echo(
        f"{blockers} blocker(s): fix them before going live"
        if blockers
        else "no blockers"
        if stored
        else "incomplete"
    )
