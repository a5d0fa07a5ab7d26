"""`bridge staff ...` and `bridge events ...` through click's runner, on the test database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
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
