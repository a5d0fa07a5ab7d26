"""`bridge staff ...`: staff accounts, their roles and API tokens; every change audited as
cli:<OS user>."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bridge.cli.base import actor, clean, database, root, table
from bridge.models import StaffRole

ROLE_HELP = (
    "viewer reads; operator also retries, resolves, reconciles and links; admin also "
    "manages staff accounts in the console."
)


@click.group()
def staff() -> None:
    """Staff accounts for the console (/admin/) and the JSON API (/api/).

    Disable, set-role and reset-password end every console session of that person at once
    (so does their own logout); disable also revokes their API tokens. The last active
    admin cannot be disabled, removed or demoted.
    """


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@staff.command("add")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([r.value for r in StaffRole]),
    default=StaffRole.VIEWER.value,
    show_default=True,
    help=ROLE_HELP,
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
def staff_add(email: str, role: str, password_stdin: bool) -> None:
    """Add a staff member; asks for the password twice (input hidden).

    \b
    bridge staff add ops@example.com --role operator
    printf '%s\\n' "$PASSWORD" | bridge staff add ops@example.com --password-stdin
    """
    from bridge.db import utcnow
    from bridge.support import staff as staff_mod

    password = _read_password(password_stdin)
    problems = staff_mod.password_problems(password)
    if problems:
        raise click.ClickException("the password " + "; ".join(problems))
    rt = root().runtime()
    who = actor()
    with database(), rt.transaction() as session:
        now = utcnow()
        user = staff_mod.add_staff(session, email, password, StaffRole(role), now)
        who.audit(session, "staff_added", now, email=user.email, role=role)
        address = user.email
    click.echo(f"added {role} {clean(address)}; log in at /admin/login")


def _find(session: Any, email: str) -> Any:
    from bridge.support.staff import find_staff

    user = find_staff(session, email)
    if user is None:
        raise click.ClickException(f"no staff member {email}; add one with `bridge staff add`")
    return user


@staff.command("token")
@click.argument("email")
@click.option("--label", help="What the token is for, e.g. the script using it.")
def staff_token(email: str, label: str | None) -> None:
    """Make a new API token for EMAIL and print it once (only its hash is stored).

    \b
    TOKEN=$(bridge staff token ops@example.com --label nightly)
    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/api/events?status=failed
    """
    from bridge.db import utcnow
    from bridge.support.staff import issue_token

    rt = root().runtime()
    who = actor()
    with database(), rt.transaction() as session:
        now = utcnow()
        user = _find(session, email)
        issued = issue_token(session, user, now, label)
        session.flush()
        who.audit(session, "token_issued", now, email=user.email, token=issued.row.id, label=label)
        token_id, prefix = issued.row.id, issued.row.prefix
    click.echo(
        f"token {token_id} ({prefix}…) for {user.email}; it is shown only now, store it", err=True
    )
    click.echo(issued.token)


@staff.command("revoke")
@click.argument("email")
@click.option("--token-id", type=int, help="Revoke only this token (default: all of EMAIL's).")
def staff_revoke(email: str, token_id: int | None) -> None:
    """Revoke EMAIL's API tokens (or one of them); API calls with them fail at once."""
    from bridge.db import utcnow
    from bridge.support.staff import revoke_tokens

    rt = root().runtime()
    who = actor()
    with database(), rt.transaction() as session:
        now = utcnow()
        user = _find(session, email)
        count = revoke_tokens(session, user, now, token_id)
        who.audit(
            session,
            "token_revoked",
            now,
            email=user.email,
            tokens=[token_id] if token_id else "all",
            count=count,
        )
    click.echo(f"revoked {count} token(s) of {user.email}")


@staff.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def staff_list(as_json: bool) -> None:
    """List staff members, their roles and active API tokens."""
    from bridge.support.staff import list_staff

    rt = root().runtime()
    with database(), rt.reads() as session:
        rows = [
            {
                "email": user.email,
                "role": user.role.value,
                "active_tokens": tokens,
                "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
                "disabled": user.disabled_at is not None,
            }
            for user, tokens in list_staff(session)
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no staff yet; add one with `bridge staff add EMAIL --role operator`")
        return
    table(
        "Staff",
        ("e-mail", "role", "state", "API tokens", "last login (UTC)"),
        [
            (
                row["email"],
                row["role"],
                "disabled" if row["disabled"] else "active",
                row["active_tokens"],
                row["last_login_at"] or "never logged in",
            )
            for row in rows
        ],
    )


def _change(call: Any) -> Any:
    """Run one account change with the terminal's user as the actor, errors as messages."""
    rt = root().runtime()
    with database():
        return call(rt, actor())


@staff.command("disable")
@click.argument("email")
def staff_disable(email: str) -> None:
    """Disable EMAIL: no more logins, every console session ended, every API token revoked.

    The account and its history stay; `bridge staff enable EMAIL` lets them in again.
    """
    from bridge.support.staff import disable_staff

    user = _change(lambda rt, who: disable_staff(rt, email, who))
    click.echo(f"disabled {clean(user.email)}: logged out everywhere, API tokens revoked")


@staff.command("enable")
@click.argument("email")
def staff_enable(email: str) -> None:
    """Let a disabled EMAIL log in again (old API tokens stay revoked; make new ones)."""
    from bridge.support.staff import enable_staff

    user = _change(lambda rt, who: enable_staff(rt, email, who))
    click.echo(f"enabled {clean(user.email)}; `bridge staff token EMAIL` makes a new API token")


@staff.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice([r.value for r in StaffRole]))
def staff_set_role(email: str, role: str) -> None:
    """Give EMAIL another ROLE; their console sessions end (they log in again).

    \b
    viewer    reads everything
    operator  also retries, resolves, reconciles and links services
    admin     also adds, disables and changes staff accounts in the console
    """
    from bridge.support.staff import set_role

    user = _change(lambda rt, who: set_role(rt, email, StaffRole(role), who))
    click.echo(f"{clean(user.email)} is now {role}; their console sessions ended")


@staff.command("reset-password")
@click.argument("email")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
def staff_reset_password(email: str, password_stdin: bool) -> None:
    """Set a new password for EMAIL (asked twice, hidden); their console sessions end.

    \b
    bridge staff reset-password ops@example.com
    printf '%s\\n' "$PASSWORD" | bridge staff reset-password ops@example.com --password-stdin
    """
    from bridge.support.staff import password_problems, reset_password

    password = _read_password(password_stdin)
    problems = password_problems(password)
    if problems:
        raise click.ClickException("the password " + "; ".join(problems))
    user = _change(lambda rt, who: reset_password(rt, email, password, who))
    click.echo(f"new password set for {clean(user.email)}; their console sessions ended")


@staff.command("remove")
@click.argument("email")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def staff_remove(email: str, yes: bool) -> None:
    """Delete EMAIL's account and API tokens (the audit log keeps what they did).

    To keep the account but stop its use, `bridge staff disable EMAIL` is enough.
    """
    from bridge.support.staff import remove_staff

    if not yes:
        click.confirm(f"Remove staff member {clean(email)} and their API tokens?", abort=True)
    removed = _change(lambda rt, who: remove_staff(rt, email, who))
    click.echo(f"removed {clean(removed)}")
