"""The rule README.md states in one sentence: terminate disables at once and deletes after
`termination.grace_days`; only an unsuspend or a create inside the grace period cancels the
deletion. Every other action inside it keeps the deletion, at its first date."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action
from tests.builders import post_hook

T = datetime.now(UTC) - timedelta(hours=1)
GRACE = timedelta(days=7)


def send(http, action, when, **options):
    body = whmcs_envelope(action, 1001, occurred_at=when, **options)
    response = post_hook(http, "whmcs", body)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


CASES = {
    # action inside the grace period: (options, is the account deleted after the grace?)
    "unsuspend": (Action.UNSUSPEND, {}, False),
    "create": (Action.CREATE, {"password": "Again-Passw0rd-1"}, False),
    "suspend": (Action.SUSPEND, {}, True),
    "change_package": (Action.CHANGE_PACKAGE, {"product": 2}, True),
    "change_password": (Action.CHANGE_PASSWORD, {"password": "Other-Passw0rd-2"}, True),
    "transfer": (Action.TRANSFER, {"client": 900}, True),
    "renew": (Action.RENEW, {}, True),
    "terminate": (Action.TERMINATE, {}, True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_action_inside_the_grace_period(client, sim, work, name):
    action, options, deleted = CASES[name]
    assert send(client, Action.CREATE, T, password="First-Passw0rd-1")["status"] == "applied"
    answer = send(client, Action.TERMINATE, T + timedelta(minutes=1))
    assert "deletion after the grace period" in answer["message"]
    assert sim.account("mail1001")["enabled"] == 0

    # six days later, still inside the grace period
    late = T + timedelta(days=6)
    assert send(client, action, late, **options)["status"] in ("applied", "queued")
    work(now=late + timedelta(minutes=1))
    assert sim.account("mail1001") is not None

    # just after the first deletion date: a repeated terminate did not postpone it
    work(now=T + GRACE + timedelta(minutes=2))
    account = sim.account("mail1001")
    if deleted:
        assert account is None, f"{name} inside the grace period cancelled the deletion"
    else:
        assert account is not None and account["enabled"] == 1


def test_the_reconcile_log_line_names_the_billing_id(client, sim, config_tree, caplog):
    """Also when the desired state cannot be built (here: no number for "unlimited")."""
    from bridge.config import parse_settings
    from bridge.web import use_settings

    config_tree["mailserver"]["unlimited_value"] = None
    use_settings(client.application, parse_settings(config_tree, {}))
    with caplog.at_level(logging.INFO, logger="bridge.provisioning.outcome"):
        answer = send(client, Action.CREATE, T, product=3)  # agency: unlimited aliases
    assert answer["reason"] == "unlimited_not_supported"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("reconcile ")]
    assert lines and lines[-1].startswith("reconcile service=whmcs:1001 "), lines
