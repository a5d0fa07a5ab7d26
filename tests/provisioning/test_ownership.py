"""Only what is ours: an unseen service naming someone else's DomainAdmin changes nothing.

The bridge holds MasterAdmin rights, so every action is checked against the binding of the
service (docs/design.md#only-act-on-accounts-the-bridge-owns). Runs on SQLite and on
PostgreSQL (BRIDGE_TEST_DATABASE_URL) against the simulator over real HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.adapters.samples import blesta_body, whmcs_envelope
from bridge.lifecycle import Action
from bridge.web import runtime
from tests.builders import post_hook

VICTIM_EMAIL = "someone-else@other.example"


def foreign(sim, username: str) -> dict:
    """A DomainAdmin of another customer, never seen by the bridge."""
    sim.seed(
        {
            "accounts": [
                {
                    "username": username,
                    "perm_level": "DomainAdmin",
                    "recovery_email": VICTIM_EMAIL,
                    "enabled": 1,
                    "quota_mailboxes": 3,
                }
            ]
        }
    )
    sim.clear_log()
    return sim.account(username)


WHMCS_CASES = [
    (Action.SUSPEND, {}, "not_linked"),
    (Action.UNSUSPEND, {}, "not_linked"),
    (Action.TERMINATE, {}, "not_linked"),
    (Action.CHANGE_PACKAGE, {"product": 3}, "not_linked"),
    (Action.CHANGE_PASSWORD, {"password": "Takeover-Passw0rd-9"}, "not_linked"),
    (Action.TRANSFER, {"previous_client": 999}, "not_linked"),  # MoveService
    (Action.TRANSFER, {"to_service": 4242}, "not_linked"),  # TransferOwnership
    (Action.CREATE, {"password": "Takeover-Passw0rd-9"}, "username_taken"),
]


@pytest.mark.parametrize(
    ("action", "options", "reason"),
    WHMCS_CASES,
    ids=[f"{a.value}-{'+'.join(o) or 'plain'}" for a, o, _ in WHMCS_CASES],
)
def test_whmcs_unseen_service_cannot_touch_a_foreign_domainadmin(
    client, sim, work, action, options, reason
):
    before = foreign(sim, "mail7777")
    response = post_hook(client, "whmcs", whmcs_envelope(action, 7777, **options))
    body = response.get_json()
    work(datetime.now(UTC) + timedelta(days=30))  # past any grace period
    assert (body["status"], body["reason"]) == ("failed", reason), body
    assert "link" in body["message"]
    assert sim.writes() == []
    assert sim.account("mail7777") == before


BLESTA_CASES = [
    (Action.SUSPEND, "not_linked"),
    (Action.UNSUSPEND, "not_linked"),
    (Action.TERMINATE, "not_linked"),
    (Action.CHANGE_PASSWORD, "not_linked"),
    (Action.CREATE, "username_taken"),
]


@pytest.mark.parametrize(("action", "reason"), BLESTA_CASES, ids=[a.value for a, _ in BLESTA_CASES])
def test_blesta_unseen_service_cannot_touch_a_foreign_domainadmin(
    client, sim, work, action, reason
):
    before = foreign(sim, "blesta7777")
    password = "Takeover-Passw0rd-9" if action is Action.CHANGE_PASSWORD else None
    body = post_hook(client, "blesta", blesta_body(action, 7777, password=password)).get_json()
    work(datetime.now(UTC) + timedelta(days=30))
    assert (body["status"], body["reason"]) == ("failed", reason), body
    assert sim.writes() == []
    assert sim.account("blesta7777") == before


def test_a_transfer_to_an_unlinked_receiver_writes_nothing(client, sim, work):
    created = post_hook(
        client, "whmcs", whmcs_envelope(Action.CREATE, 7001, password="Own-Passw0rd-77")
    )
    assert created.get_json()["status"] == "applied"
    foreign(sim, "mail7002")
    body = post_hook(
        client, "whmcs", whmcs_envelope(Action.TRANSFER, 7001, to_service=7002)
    ).get_json()
    assert (body["status"], body["reason"]) == ("failed", "not_linked")
    assert "7002" in body["message"]
    assert sim.writes() == []


def test_a_bound_service_is_never_retargeted_by_a_new_username(client, sim, db):
    created = post_hook(
        client, "whmcs", whmcs_envelope(Action.CREATE, 7100, password="Own-Passw0rd-77")
    ).get_json()
    assert created["status"] == "applied"
    before = foreign(sim, "victim7100")
    envelope = whmcs_envelope(Action.SUSPEND, 7100)
    envelope["params"]["username"] = "victim7100"  # an admin's typo in the Username field
    body = post_hook(client, "whmcs", envelope).get_json()
    assert (body["status"], body["reason"]) == ("failed", "username_changed")
    assert "relink" in body["message"]
    assert sim.writes() == []
    assert sim.account("victim7100") == before
    assert sim.account("mail7100")["enabled"] == 1


def test_binding_is_recorded_for_a_create_and_for_an_adoption(client, sim, db):
    from sqlalchemy import select

    from bridge.models import Service

    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 7200, password="Own-Passw0rd-77"))
    sim.seed(
        {
            "accounts": [
                {
                    "username": "mail7201",
                    "perm_level": "DomainAdmin",
                    "recovery_email": "owner701@example.org",  # the client of service 7201
                    "enabled": 1,
                }
            ]
        }
    )
    post_hook(client, "whmcs", whmcs_envelope(Action.CREATE, 7201, password="Own-Passw0rd-77"))
    rows = {s.service_ref: s for s in db.scalars(select(Service))}
    assert (rows["7200"].bound_how, rows["7200"].bound_by) == ("created", "bridge")
    assert (rows["7201"].bound_how, rows["7201"].username) == ("adopted", "mail7201")
    assert rows["7200"].bound_at is not None


def test_staff_link_then_retry_applies_the_waiting_event(app, client, sim, work, db):
    from bridge.support.actions import Actor, link_service, preview_link, retry_event

    before = foreign(sim, "mail7300")
    body = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 7300)).get_json()
    assert body["reason"] == "not_linked"
    rt = runtime(app)
    from sqlalchemy import select

    from bridge.models import AuditEntry, Service

    service_id = db.scalar(select(Service.id).where(Service.service_ref == "7300"))
    preview = preview_link(rt, service_id, "mail7300")
    assert (preview.recovery_email, preview.bound_to) == (VICTIM_EMAIL, None)
    assert sim.writes() == [] and sim.account("mail7300") == before
    link_service(rt, service_id, "mail7300", Actor("ops@example.com", "api"))
    row = db.get(Service, service_id)
    assert (row.bound_how, row.bound_by) == ("linked", "ops@example.com")
    audit = db.scalars(select(AuditEntry).where(AuditEntry.action == "link")).one()
    assert audit.detail["recovery_email"] == VICTIM_EMAIL
    result = retry_event(rt, body["event_id"], Actor("ops@example.com", "api"))
    assert result.outcome is not None and result.outcome.status == "applied"
    assert sim.account("mail7300")["enabled"] == 0
