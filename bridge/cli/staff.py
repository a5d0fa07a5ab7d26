"""`bridge staff ...`: staff accounts and their API tokens."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bridge.cli.base import actor, database, root
from bridge.models import StaffRole


@click.group()
def staff() -> None:
    """Staff accounts for the console (/admin/) and the JSON API (/api/)."""


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
    help="viewer reads; operator also retries, resolves and reconciles.",
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
    click.echo(f"added {role} {address}; log in at /admin/login")


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
    for row in rows:
        login = row["last_login_at"] or "never logged in"
        click.echo(f"{row['email']}  {row['role']}  {row['active_tokens']} token(s)  {login}")
