"""`bridge staff ...` and `bridge events ...` through click's runner, on the test database."""

from __future__ import annotations

import getpass
import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import select

from bridge.cli import cli
from bridge.lifecycle import Action, EventStatus
from bridge.models import AuditEntry, Event, Service, StaffRole, StaffToken, StaffUser
from bridge.support.staff import verify_password
from tests.admin.conftest import PASSWORD, send


@pytest.fixture
def config_file(tmp_path: Path, config_tree: dict[str, Any], app) -> Path:
    """The app's own config (same database, same mail server) as a file for the CLI."""
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    return path


@pytest.fixture
def bridge(config_file: Path):  # type: ignore[no-untyped-def]
    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["--config", str(config_file), *args], input=input)

    return run


def test_staff_add_prompts_twice_and_hashes(bridge, db):
    result = bridge(
        "staff", "add", "Ops@Example.com", "--role", "operator", input=f"{PASSWORD}\n" * 2
    )
    assert result.exit_code == 0, result.output
    assert "added operator ops@example.com" in result.output
    assert PASSWORD not in result.output  # hidden input is not echoed
    user = db.scalar(select(StaffUser))
    assert (user.email, user.role) == ("ops@example.com", StaffRole.OPERATOR)
    assert verify_password(PASSWORD, user.password_hash)
    entry = db.scalar(select(AuditEntry))
    assert entry.action == "staff_added" and entry.via == "cli" and entry.actor.startswith("cli:")


def test_staff_add_refusals(bridge):
    mismatch = bridge("staff", "add", "a@example.com", input=f"{PASSWORD}\nsomething-else-1\n")
    assert mismatch.exit_code != 0
    assert "the two entered values do not match" in mismatch.output.lower()
    weak = bridge("staff", "add", "a@example.com", "--password-stdin", input="short\n")
    assert weak.exit_code == 1 and "at least 12 characters" in weak.output
    assert (
        bridge("staff", "add", "a@example.com", "--password-stdin", input=PASSWORD).exit_code == 0
    )
    again = bridge("staff", "add", "a@example.com", "--password-stdin", input=PASSWORD)
    assert again.exit_code == 1 and "a@example.com is already a staff member" in again.output
    bad = bridge("staff", "add", "not-an-email", "--password-stdin", input=PASSWORD)
    assert bad.exit_code == 1 and "is not an e-mail address" in bad.output
    evil = bridge("staff", "add", "a\nb\x1b[31m@example.com", "--password-stdin", input=PASSWORD)
    assert evil.exit_code == 1 and "is not an e-mail address" in evil.output
    assert "\x1b" not in evil.output


def test_token_works_on_the_api_then_revoke_ends_it(bridge, client, db):
    assert (
        bridge("staff", "add", "a@example.com", "--password-stdin", input=PASSWORD).exit_code == 0
    )
    result = bridge("staff", "token", "a@example.com", "--label", "nightly")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("mbst_") and "shown only now" in result.stderr
    assert db.scalar(select(StaffToken.label)) == "nightly"
    assert token not in {t.token_hash for t in db.scalars(select(StaffToken))}
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=headers).get_json()["role"] == "viewer"

    listed = json.loads(bridge("staff", "list", "--json").output)
    assert listed[0]["email"] == "a@example.com" and listed[0]["active_tokens"] == 1

    revoked = bridge("staff", "revoke", "a@example.com")
    assert revoked.exit_code == 0 and "revoked 1 token(s)" in revoked.output
    assert client.get("/api/me", headers=headers).status_code == 401
    assert json.loads(bridge("staff", "list", "--json").output)[0]["active_tokens"] == 0
    missing = bridge("staff", "token", "nobody@example.com")
    assert missing.exit_code == 1 and "no staff member nobody@example.com" in missing.output
    actions = [a.action for a in db.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["staff_added", "token_issued", "token_revoked"]


def test_events_list_and_show(bridge, client, sim):
    send(client, Action.CREATE, 1001)
    failed = send(client, Action.CREATE, 1002, product=77)
    listed = bridge("events", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == [
        "id",
        "received",
        "(UTC)",
        "source",
        "action",
        "service",
        "status",
        "reason",
    ]
    assert "1002" in lines[1] and "failed" in lines[1] and "unmapped_product" in lines[1]
    assert lines[-1] == "applied 1, failed 1"
    only = json.loads(bridge("events", "list", "--status", "failed", "--json").output)
    assert [e["service_ref"] for e in only["events"]] == ["1002"]
    by_service = json.loads(bridge("events", "list", "--service", "1001", "--json").output)
    assert [e["service_ref"] for e in by_service["events"]] == ["1001"]
    paged = bridge("events", "list", "--limit", "1")
    assert f"older: --before {failed['event_id']}" in paged.output

    shown = bridge("events", "show", str(failed["event_id"]))
    assert shown.exit_code == 0, shown.output
    assert "why: The billing product has no tier (unmapped_product)" in shown.output
    assert '"password": "[redacted]"' in shown.output
    assert "bridge services show whmcs 1002" in shown.output
    detail = json.loads(bridge("events", "show", str(failed["event_id"]), "--json").output)
    assert detail["reason"] == "unmapped_product" and detail["payload"]["event"] == "CreateAccount"
    assert bridge("events", "show", "99999").exit_code == 1


def test_events_retry_one_after_the_fix(bridge, client, sim, db, config_file, config_tree):
    failed = send(client, Action.CREATE, 1001, product=77)
    still = bridge("events", "retry", str(failed["event_id"]))
    assert still.exit_code == 1 and "outcome: failed (unmapped_product" in still.output
    config_tree["products"]["whmcs"][77] = "starter"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    fixed = bridge("events", "retry", str(failed["event_id"]))
    assert fixed.exit_code == 0, fixed.output
    assert "outcome: applied" in fixed.output
    assert db.get(Event, failed["event_id"]).status is EventStatus.APPLIED
    assert sim.account("mail1001") is not None


def test_events_retry_failed_with_progress(bridge, client, sim, db, config_file, config_tree):
    for service in (1001, 1002, 1003):
        send(client, Action.CREATE, service, product=77)
    send(client, Action.CREATE, 1004, product=77)
    queued = bridge("events", "retry", "--failed", "--source", "blesta", "--yes")
    assert "nothing to retry" in queued.output
    config_tree["products"]["whmcs"][77] = "starter"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    refused = bridge("events", "retry", "--failed", input="n\n")
    assert refused.exit_code == 1 and "Reconcile 4 service(s) (4 failed event(s)) again?" in (
        refused.output
    )
    result = bridge("events", "retry", "--failed", "--source", "whmcs", input="y\n")
    assert result.exit_code == 0, result.output
    assert "reconciling" in result.stderr  # the progress bar (animated on a terminal)
    assert "4 service(s) (4 failed event(s)): 4 applied" in result.stdout
    assert {e.status for e in db.scalars(select(Event))} == {EventStatus.APPLIED}
    assert db.scalar(select(Service.job_due_at).where(Service.service_ref == "1001")) is None
    actions = [a.action for a in db.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == ["retry"] * 4 + ["bulk_retry"]


def test_events_retry_usage(bridge):
    assert bridge("events", "retry").exit_code == 2
    assert bridge("events", "retry", "1", "--failed").exit_code == 2
    assert bridge("events", "retry", "1", "--source", "whmcs").exit_code == 2


def test_a_database_without_the_staff_tables_says_to_upgrade(tmp_path, config_tree):
    config_tree["database_url"] = f"sqlite:///{tmp_path / 'empty.db'}"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(path), "staff", "list"])
    assert result.exit_code == 1
    assert "run `bridge db upgrade`" in result.output


# ---- staff lifecycle from a shell (issue 11, item 5) ----------------------------------------


def add(bridge, email: str, role: str = "operator") -> None:
    result = bridge("staff", "add", email, "--role", role, "--password-stdin", input=PASSWORD)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "command", ["disable", "enable", "set-role", "reset-password", "remove", "list", "add"]
)
def test_every_staff_command_has_help(bridge, command):
    result = bridge("staff", command, "--help")
    assert result.exit_code == 0 and "Usage: cli staff " + command in result.output


def test_disable_enable_set_role_reset_remove(bridge, client, db):
    add(bridge, "boss@example.com", "admin")
    add(bridge, "a@example.com")
    token = bridge("staff", "token", "a@example.com").stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}

    disabled = bridge("staff", "disable", "a@example.com")
    assert disabled.exit_code == 0, disabled.output
    assert "disabled a@example.com: logged out everywhere, API tokens revoked" in disabled.output
    assert client.get("/api/me", headers=headers).status_code == 401
    again = bridge("staff", "disable", "a@example.com")
    assert again.exit_code == 1 and "already_disabled: a@example.com is disabled since" in (
        again.output
    )
    assert bridge("staff", "enable", "a@example.com").exit_code == 0
    listed = bridge("staff", "list")
    assert re.search(r"a@example\.com\s+operator\s+active\s+0", listed.output), listed.output

    role = bridge("staff", "set-role", "a@example.com", "viewer")
    assert role.exit_code == 0 and "a@example.com is now viewer" in role.output
    bad_role = bridge("staff", "set-role", "a@example.com", "king")
    assert bad_role.exit_code == 2 and "'king' is not one of" in bad_role.output

    new = "Another-Password-77"
    reset = bridge("staff", "reset-password", "a@example.com", "--password-stdin", input=new)
    assert reset.exit_code == 0, reset.output
    user = db.scalar(select(StaffUser).where(StaffUser.email == "a@example.com"))
    assert verify_password(new, user.password_hash)
    weak = bridge("staff", "reset-password", "a@example.com", "--password-stdin", input="short")
    assert weak.exit_code == 1 and "at least 12 characters" in weak.output

    assert bridge("staff", "remove", "a@example.com", input="n\n").exit_code == 1
    removed = bridge("staff", "remove", "a@example.com", "--yes")
    assert removed.exit_code == 0 and "removed a@example.com" in removed.output
    assert db.scalar(select(StaffUser).where(StaffUser.email == "a@example.com")) is None
    assert db.scalar(select(StaffToken)) is None
    missing = bridge("staff", "disable", "nobody@example.com")
    assert missing.exit_code == 1
    assert "no_such_staff: there is no staff member nobody@example.com" in missing.output

    entries = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [e.action for e in entries] == [
        "staff_added",
        "staff_added",
        "token_issued",
        "staff_disabled",
        "staff_enabled",
        "staff_role_changed",
        "staff_password_reset",
        "staff_removed",
    ]
    assert {(e.via, e.actor) for e in entries} == {("cli", f"cli:{getpass.getuser()}")}


def test_the_last_active_admin_is_kept(bridge, db):
    add(bridge, "boss@example.com", "admin")
    for args in (("disable",), ("set-role",), ("remove", "--yes")):
        argv = [args[0], "boss@example.com", *(["operator"] if args[0] == "set-role" else [])]
        result = bridge("staff", *argv, *args[1:])
        assert result.exit_code == 1, args
        assert "last_admin: boss@example.com is the last active admin" in result.output
        assert "bridge staff set-role EMAIL admin" in result.output
    # with a second admin, the first may go
    add(bridge, "deputy@example.com", "admin")
    assert bridge("staff", "disable", "boss@example.com").exit_code == 0
    assert bridge("staff", "remove", "deputy@example.com", "--yes").exit_code == 1
    assert db.scalar(select(StaffUser.role).where(StaffUser.email == "deputy@example.com")) is (
        StaffRole.ADMIN
    )


# ---- every change a person makes from a shell is audited (issue 11, item 10) --------------


def drift_by_hand(sim, username: str, **changes: Any) -> None:
    """Someone changes the account in the Mail Portal, behind the bridge's back."""
    token = sim.ctl("POST", "tokens", json={"username": "admin"})["auth_token"]
    response = requests.patch(
        f"{sim.url}/api/v1/accounts/{username}/", json=changes, auth=("admin", token), timeout=10
    )
    assert response.ok


def test_bridge_reconcile_is_audited_as_the_os_user(bridge, client, sim, db):
    send(client, Action.CREATE, 1001, product=2)
    drift_by_hand(sim, "mail1001", quota_mailboxes=99)
    dry = bridge("reconcile", "whmcs", "1001", "--dry-run")
    assert dry.exit_code == 0 and "would: set mailboxes 99 -> 25" in dry.output
    assert db.scalar(select(AuditEntry)) is None  # looking changes nothing

    fixed = bridge("reconcile", "whmcs", "1001")
    assert fixed.exit_code == 0, fixed.output
    assert sim.account("mail1001")["quota_mailboxes"] == 25
    (entry,) = db.scalars(select(AuditEntry))
    assert (entry.action, entry.via, entry.actor) == (
        "reconcile",
        "cli",
        f"cli:{getpass.getuser()}",
    )
    assert entry.service_id == db.scalar(select(Service.id))
    assert entry.detail["outcome"] == "applied"


def test_bridge_import_apply_is_audited_as_the_os_user(bridge, sim, db, tmp_path):
    sim.seed(
        {
            "accounts": [
                {
                    "username": "old1",
                    "perm_level": "DomainAdmin",
                    "password": "Old-Plugin-Passw0rd",
                    "recovery_email": "client1@example.org",
                    "quota_domains": 1,
                    "quota_domainaliases": 1,
                    "quota_aliases": 10,
                    "quota_mailboxes": 4,  # drifted: the starter tier has 5
                    "storagequota_total": 5120,
                }
            ]
        }
    )
    csv = tmp_path / "services.csv"
    csv.write_text(
        "id,pid,userid,email,username,status\n5001,1,1,client1@example.org,old1,Active\n",
        encoding="utf-8",
    )
    result = bridge("import", "whmcs", "--csv", str(csv), "--apply")
    assert result.exit_code == 0, result.output
    assert sim.account("old1")["quota_mailboxes"] == 5
    who = f"cli:{getpass.getuser()}"
    entries = db.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert [(e.action, e.via, e.actor) for e in entries] == [
        ("import", "cli", who),
        ("reconcile", "cli", who),
    ]
    assert entries[0].detail["username"] == "old1" and entries[1].detail["outcome"] == "applied"
    assert db.scalar(select(Service.bound_by)) == who


def test_cli_retries_record_who_and_how_each_ended(
    bridge, client, sim, db, config_file, config_tree
):
    send(client, Action.CREATE, 1001, product=77)
    config_tree["products"]["whmcs"][77] = "starter"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    assert bridge("events", "retry", "--failed", "--yes").exit_code == 0
    retry = db.scalar(select(AuditEntry).where(AuditEntry.action == "retry"))
    assert (retry.via, retry.actor) == ("cli", f"cli:{getpass.getuser()}")
    assert retry.detail["outcome"] == "applied"
