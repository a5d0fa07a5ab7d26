"""Staff page views never spend the mail-server budget provisioning needs (issue 11, item 8):
pages show the last read of the account with its time; only "refresh" reads again, through a
gate row of its own with a small share of the rate."""

from __future__ import annotations

import json
import re
import time
from html import unescape

import pytest
from sqlalchemy import select, update

from bridge.lifecycle import Action
from bridge.mailserver.ratelimit import SPACING_MARGIN
from bridge.models import AccountRead, Event, Gate, Service
from bridge.runtime import STAFF_READ_SHARE
from bridge.web import runtime
from tests.admin.conftest import OPERATOR, form_post, make_token, send


def plain(response) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


def gates(db) -> dict[str, Gate]:
    return {g.key.rsplit("|", 1)[-1]: g for g in db.scalars(select(Gate))}


def test_pages_show_the_last_read_and_only_refresh_reads_again(as_operator, client, sim, db):
    send(client, Action.CREATE, 1001, product=2)
    service_id, event_id = db.scalar(select(Service.id)), db.scalar(select(Event.id))
    pages = (f"/admin/services/{service_id}", f"/admin/events/{event_id}")
    provisioning = gates(db)["admin"]
    sim.clear_log()

    for url in pages * 3:
        response = client.get(url)
        assert response.status_code == 200
        assert "The account has not been read from the mail server yet." in plain(response)
    assert sim.requests() == []  # not a single call, not even a login

    refreshed = form_post(client, pages[0], f"{pages[0]}/refresh")
    assert refreshed.status_code == 302 and refreshed.location == pages[0]
    assert [e["method"] for e in sim.requests() if e["path"] != "/api/v1/auth/"] == ["GET"]
    text = plain(client.get(pages[0]))
    assert "Refreshed: the account as the mail server shows it now." in text
    assert f"by {OPERATOR}" in text and "mailboxes 25 25, 0 used" in text

    # the read took a slot of the staff gate, none of provisioning's
    after = gates(db)
    assert after["admin"].next_slot_at == provisioning.next_slot_at
    assert after["staff-reads"].next_slot_at > 0

    # and it is what the pages show from now on, without calling again
    sim.clear_log()
    for url in pages * 3:
        assert "mailboxes 25 25, 0 used" in plain(client.get(url))
    assert sim.requests() == []


def test_the_stored_read_keeps_no_secret(as_operator, client, sim, db):
    send(client, Action.CREATE, 1001)
    service_id = db.scalar(select(Service.id))
    url = f"/admin/services/{service_id}"
    form_post(client, url, f"{url}/refresh")
    read = db.get(AccountRead, service_id)
    assert read.username == "mail1001" and read.read_by == OPERATOR
    assert read.account["recovery_email"] and read.account["limits"]["mailboxes"] == 5
    assert "password" not in json.dumps(read.account) and "SHA512" not in json.dumps(read.account)


def test_no_refresh_while_provisioning_is_paused(as_operator, client, sim, db):
    send(client, Action.CREATE, 1001)
    service_id = db.scalar(select(Service.id))
    db.execute(update(Gate).values(blocked_until=time.time() + 120))  # a 429 told us to wait
    db.commit()
    sim.clear_log()
    url = f"/admin/services/{service_id}"
    form_post(client, url, f"{url}/refresh")
    assert "Not refreshed: mailserver_paused" in plain(client.get(url))
    assert sim.requests() == []


def test_staff_reads_get_a_small_share_of_the_rate(app):
    rt = runtime(app)
    work, staff = rt.mailserver.limiter, rt.staff_mailserver.limiter
    rate = rt.settings.mailserver.rate_limit_per_s
    assert work.key != staff.key
    work_rate, staff_rate = SPACING_MARGIN / work.interval, SPACING_MARGIN / staff.interval
    assert staff_rate == pytest.approx(rate * STAFF_READ_SHARE) and STAFF_READ_SHARE <= 0.2
    assert work_rate + staff_rate == pytest.approx(rate)  # together, the configured rate
    assert rt.staff_mailserver.tokens is rt.mailserver.tokens  # one login serves both


def test_the_api_service_view_reads_from_the_staff_share(app, client, sim, db, operator):
    send(client, Action.CREATE, 1001)
    service_id = db.scalar(select(Service.id))
    provisioning = gates(db)["admin"].next_slot_at
    headers = {"Authorization": f"Bearer {make_token(app, operator)}"}
    body = client.get(f"/api/services/{service_id}", headers=headers).get_json()
    assert body["in_sync"] is True
    assert gates(db)["admin"].next_slot_at == provisioning
    assert db.get(AccountRead, service_id).read_by is None
