"""One service through its whole life, against the simulator over real HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action, EventStatus
from bridge.models import Event
from bridge.web import runtime
from tests.builders import post_hook
from tests.provisioning.conftest import give_domain

DOMAIN = "acme-example.net"


def send(client, action, when, **options):
    response = post_hook(client, "whmcs", whmcs_envelope(action, 1001, occurred_at=when, **options))
    return response.status_code, response.get_json()


def mailusers(sim):
    accounts = sim.ctl("GET", "state")["accounts"]
    return {a["username"]: a["enabled"] for a in accounts if a["perm_level"] == "MailUser"}


def test_full_lifecycle(app, client, sim, work, db):
    t = datetime.now(UTC) - timedelta(hours=1)

    # create: applied only once the DomainAdmin exists with the starter quotas
    status, body = send(client, Action.CREATE, t, product=1, password="First-Passw0rd-1")
    assert (status, body["status"]) == (200, "applied")
    da = sim.account("mail1001")
    assert da["perm_level"] == "DomainAdmin" and da["enabled"] == 1
    assert (da["quota_mailboxes"], da["storagequota_total"]) == (5, 5120)
    assert da["recovery_email"] == "owner501@example.org"
    first_hash = da["password_hash"]
    assert sim.logins() == 1
    assert first_hash.startswith("{SHA512-CRYPT}$6$")

    # upgrade to business, then the customer fills six mailboxes (one disabled on purpose)
    status, body = send(client, Action.CHANGE_PACKAGE, t + timedelta(minutes=1), product=2)
    assert body["status"] == "applied"
    assert sim.account("mail1001")["quota_mailboxes"] == 25
    give_domain(
        sim,
        "mail1001",
        DOMAIN,
        [
            ("u1", 1000, 1),
            ("u2", 1000, 1),
            ("u3", 1000, 0),
            ("u4", 1000, 1),
            ("u5", 1000, 1),
            ("u6", 1000, 1),
        ],
    )

    # downgrade below usage: refused with the numbers, nothing written
    status, body = send(client, Action.CHANGE_PACKAGE, t + timedelta(minutes=2), product=1)
    assert (status, body["status"], body["reason"]) == (200, "failed", "quota_below_usage")
    assert "mailboxes: 6 in use, new limit 5" in body["message"]
    assert "storage MB: 6000 in use, new limit 5120" in body["message"]
    assert sim.account("mail1001")["quota_mailboxes"] == 25
    assert sim.writes() == []

    # a suspend for non-payment still works while the downgrade is stuck...
    status, body = send(client, Action.SUSPEND, t + timedelta(minutes=3))
    assert body["status"] == "applied"
    assert sim.account("mail1001")["enabled"] == 0
    assert set(mailusers(sim).values()) == {0}
    # ...and billing moves the customer back to business: the stuck downgrade is superseded
    status, body = send(client, Action.CHANGE_PACKAGE, t + timedelta(minutes=4), product=2)
    assert body["status"] == "applied"
    statuses = [e.status for e in db.scalars(select(Event).order_by(Event.id))]
    assert statuses[2] is EventStatus.SUPERSEDED

    # unsuspend restores exactly what was enabled: u3 stays disabled
    status, body = send(client, Action.UNSUSPEND, t + timedelta(minutes=5))
    assert body["status"] == "applied"
    assert sim.account("mail1001")["enabled"] == 1
    assert mailusers(sim) == {f"u{i}@{DOMAIN}": int(i != 3) for i in range(1, 7)}

    # change_password: the server gets a new hash
    status, body = send(
        client, Action.CHANGE_PASSWORD, t + timedelta(minutes=6), password="Second-Passw0rd-2"
    )
    assert body["status"] == "applied"
    assert sim.account("mail1001")["password_hash"] not in (first_hash, None)

    # terminate: disabled now, deleted only after the 7-day grace (fake clock for the worker)
    sim.clear_log()
    status, body = send(client, Action.TERMINATE, t + timedelta(minutes=7))
    assert body["status"] == "applied"
    assert "deletion after the grace period" in body["message"]
    assert sim.account("mail1001")["enabled"] == 0
    assert work(now=datetime.now(UTC) + timedelta(days=6)) == []
    assert sim.account("mail1001") is not None
    outcomes = work(now=t + timedelta(days=7, minutes=8))
    assert [o.status for o in outcomes] == ["applied"]
    assert sim.account("mail1001") is None
    assert not any(name.endswith(DOMAIN) for name in mailusers(sim))
    deletes = [e for e in sim.writes() if e["method"] == "DELETE"]
    assert len(deletes) == 1

    # one login for the whole run: the first token served every later call
    assert sim.logins() == 0
    assert runtime(app).mailserver.tokens.logins == 1
