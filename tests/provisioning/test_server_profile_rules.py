"""What the stored server profile changes: a quota of 0 is sent only to a server seen to read 0
as "none" (`bridge mappings check`, intake, planning), and a lowered limit whose usage the server
does not report is refused with `usage_unknown`. Over real HTTP against the simulator."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy import select

from bridge.adapters.samples import whmcs_envelope
from bridge.cli import cli
from bridge.db import utcnow
from bridge.lifecycle import Action, ServiceState
from bridge.mailserver import PermanentError
from bridge.mailserver.profile import ServerProfile, save_profile
from bridge.models import Service
from bridge.provisioning.reconcile import plan
from bridge.web import runtime
from tests.builders import post_hook
from tests.provisioning.test_plan import NOW, admin, desired, kinds

T = datetime.now(UTC) - timedelta(hours=1)
LEAN = 4


def run(tmp_path, config_tree, *args: str) -> Result:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def send(client, action, minutes, **options):
    envelope = whmcs_envelope(action, 1001, occurred_at=T + timedelta(minutes=minutes), **options)
    return post_hook(client, "whmcs", envelope).get_json()


def store_profile(app, url: str, zero_quota: str) -> None:
    with runtime(app).transaction() as session:
        save_profile(
            session, ServerProfile(base_url=url, checked_at=utcnow(), zero_quota=zero_quota)
        )


@pytest.fixture
def config_tree(config_tree):
    """The provisioning test config plus a tier "lean" (WHMCS product 4) with no domain alias."""
    config_tree["tiers"]["lean"] = {**config_tree["tiers"]["starter"], "domain_aliases": 0}
    config_tree["products"]["whmcs"][LEAN] = "lean"
    return config_tree


# ---- quota 0 ----------------------------------------------------------------------------------


def test_mappings_check_refuses_a_zero_until_check_server_saw_it_mean_none(
    tmp_path, app, sim, config_tree
):
    result = run(tmp_path, config_tree, "mappings", "check")
    assert result.exit_code == 1
    assert (
        'refused: quota_zero_ambiguous: tier "lean" sets domain_aliases to 0, and whether '
        "the mail server reads 0 as none or as unlimited is not known yet: run `bridge "
        "check-server`; or use 1 or more"
    ) in " ".join(result.output.split())

    # check-server on a server where 0 means unlimited: still refused, with that reason
    sim.ctl("PATCH", "config", json={"profile": "zero-unlimited", "rate_limit": 0})
    assert run(tmp_path, config_tree, "check-server", "--yes").exit_code == 0
    result = run(tmp_path, config_tree, "mappings", "check", "--json")
    assert result.exit_code == 1
    refused = json.loads(result.output)["refused"]
    assert [(r["tier"], r["reason"]) for r in refused] == [("lean", "quota_zero_ambiguous")]
    assert "this mail server reads 0 as unlimited" in refused[0]["message"]

    # after an NMS upgrade, check-server sees 0 allow none: the tier is fine
    sim.ctl("PATCH", "config", json={"profile": "documented"})
    assert run(tmp_path, config_tree, "check-server", "--yes").exit_code == 0
    result = run(tmp_path, config_tree, "mappings", "check")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("mappings OK")


def test_a_zero_is_refused_on_arrival_until_the_profile_says_zero(app, client, sim, config_tree):
    sim.clear_log()
    body = send(client, Action.CREATE, 0, product=LEAN)
    assert (body["status"], body["reason"]) == ("failed", "quota_zero_ambiguous")
    assert "bridge check-server" in body["message"]
    assert sim.requests() == [] and sim.account("mail1001") is None

    store_profile(app, sim.url, "zero")
    body = send(client, Action.CREATE, 1, product=LEAN)
    assert body["status"] == "applied", body
    assert sim.account("mail1001")["quota_domainaliases"] == 0


def test_only_the_package_waits_when_zero_turns_out_unlimited(app, client, sim, config_tree, db):
    store_profile(app, sim.url, "zero")
    assert send(client, Action.CREATE, 0, product=LEAN)["status"] == "applied"

    # The NMS was upgraded and now reads 0 as unlimited (check-server stored that).
    store_profile(app, sim.url, "unlimited")
    body = send(client, Action.SUSPEND, 1)
    assert body["status"] == "applied", body  # the suspend is not held up by the package
    assert sim.account("mail1001")["enabled"] == 0
    service = db.scalars(select(Service)).one()
    assert service.last_reason == "quota_zero_ambiguous"
    assert "reads 0 as unlimited" in (service.last_message or "")

    body = send(client, Action.CHANGE_PACKAGE, 2, product=LEAN, addons={"extra_mailboxes": 1})
    assert (body["status"], body["reason"]) == ("failed", "quota_zero_ambiguous")


def test_plan_holds_a_blocked_package_but_not_the_rest():
    blocked = PermanentError("quota_zero_ambiguous", "tier sets domain_aliases to 0")
    want = desired(limits=None, package_blocked=blocked, state=ServiceState.SUSPENDED)
    result = plan(want, admin(), NOW)
    assert result.blocked == {"package": blocked}
    assert kinds(result) == ["disable"]
    try:
        plan(want, None, NOW)
    except PermanentError as exc:
        assert exc is blocked
    else:
        raise AssertionError("a create without its bundle must fail")


# ---- usage_unknown ---------------------------------------------------------------------------


def test_a_downgrade_is_refused_when_the_server_hides_usage(app, client, sim, db):
    sim.ctl("PATCH", "config", json={"profile": "no-usage", "rate_limit": 0})
    assert send(client, Action.CREATE, 0, product=2)["status"] == "applied"  # business
    sim.clear_log()

    body = send(client, Action.CHANGE_PACKAGE, 1, product=1)  # down to starter
    assert (body["status"], body["reason"]) == ("failed", "usage_unknown")
    assert "mailboxes (limit 25 -> 5)" in body["message"]
    assert sim.writes() == []
    assert sim.account("mail1001")["quota_mailboxes"] == 25

    # the same downgrade on a server that reports usage (none used) goes through
    sim.ctl("PATCH", "config", json={"profile": "documented"})
    body = send(client, Action.CHANGE_PACKAGE, 2, product=1)
    assert body["status"] == "applied", body
    assert sim.account("mail1001")["quota_mailboxes"] == 5


def test_an_upgrade_needs_no_usage():
    limits = dict(desired().limits or {})
    bigger = {**limits, "mailboxes": limits["mailboxes"] + 5}
    result = plan(desired(limits=bigger), admin(used={}), NOW)
    assert result.blocked == {} and kinds(result) == ["update"]
    smaller = {**limits, "mailboxes": limits["mailboxes"] - 1}
    result = plan(desired(limits=smaller), admin(used={}), NOW)
    assert result.blocked["package"].reason == "usage_unknown" and kinds(result) == []
