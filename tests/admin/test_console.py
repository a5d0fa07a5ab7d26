"""Console pages over the real app, the real database and the NMS simulator on loopback."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import requests
from sqlalchemy import select

from bridge.lifecycle import Action, EventStatus
from bridge.models import Attempt, AuditEntry, Event, Service
from bridge.web import use_settings
from tests.admin.conftest import OPERATOR, csrf_from, fixed_settings, form_post, send


def text_of(response) -> str:
    return response.get_data(as_text=True)


def plain(html: str) -> str:
    """The page's text without tags, whitespace collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def audit_actions(db) -> list[str]:
    return [a.action for a in db.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def test_events_list_counts_filters_and_chart(as_operator, client, sim):
    send(client, Action.CREATE, 1001)
    send(client, Action.SUSPEND, 1001)
    send(client, Action.CREATE, 1002, product=77)
    send(client, Action.CREATE, 1003, product=2)
    page = text_of(client.get("/admin/events"))
    text = plain(page)
    assert "all 4" in text and "applied 3" in text and "failed 1" in text
    assert "Retry 1 failed…" in text
    assert "<svg" in page and "Events per hour, last 48 hours" in page
    assert 'class="s-applied"' in page and 'class="s-failed"' in page
    assert "The billing product has no tier" in text

    failed = plain(text_of(client.get("/admin/events?status=failed")))
    assert "1002" in failed and ">1001<" not in failed
    suspended = text_of(client.get("/admin/events?action=suspend"))
    assert suspended.count('href="/admin/events/') == 1
    by_service = text_of(client.get("/admin/events?service=1001"))
    assert by_service.count('href="/admin/events/') == 2
    by_source = plain(text_of(client.get("/admin/events?source=blesta")))
    assert "No event matches." in by_source
    future = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert "No event matches." in plain(text_of(client.get(f"/admin/events?since={future}")))
    bad = plain(text_of(client.get("/admin/events?status=nope&since=yesterday")))
    assert "status: Must be one of" in bad and "since: Not a valid datetime." in bad


def test_unmapped_product_event_shows_why_and_applies_after_the_fix(
    as_operator, client, app, sim, db, config_tree
):
    answer = send(client, Action.CREATE, product=77)
    assert (answer["status"], answer["reason"]) == ("failed", "unmapped_product")
    url = f"/admin/events/{answer['event_id']}"
    page = text_of(client.get(url))
    text = plain(page)
    assert "The billing product has no tier" in text
    assert 'product "77" of source "whmcs" has no tier' in text
    assert "Add the product under products:" in text
    assert '"password": "[redacted]"' in text
    assert "unmapped_product" in text
    assert ">Retry</button>" in page and "Mark resolved" in page

    # still unmapped: the retry fails again, with the same reason
    response = form_post(client, url, f"{url}/retry")
    assert response.status_code == 302
    text = plain(text_of(client.get(url)))
    assert "Retried, and it failed again: unmapped_product" in text
    assert db.get(Event, answer["event_id"]).status is EventStatus.FAILED

    use_settings(app, fixed_settings(config_tree, 77, "business"))
    form_post(client, url, f"{url}/retry")
    text = plain(text_of(client.get(url)))
    assert "Retried: the mail server now matches the billing system." in text
    service_id = db.get(Event, answer["event_id"]).service_id
    refresh = f"/admin/services/{service_id}/refresh"
    assert form_post(client, url, refresh, event=answer["event_id"]).location == url
    page = text_of(client.get(url))
    text = plain(page)
    assert "In sync: as of that read, a reconcile would change nothing." in text
    assert 'class="badge s-applied"' in page
    event = db.get(Event, answer["event_id"])
    assert event.status is EventStatus.APPLIED and event.reason is None
    assert sim.account("mail1001")["quota_mailboxes"] == 25
    # every attempt, with the calls it made
    assert "POST /api/v1/accounts/" in text
    retries = db.scalars(
        select(AuditEntry).where(AuditEntry.action == "retry").order_by(AuditEntry.id)
    ).all()
    assert [r.detail["outcome"] for r in retries] == ["failed", "applied"]
    assert {(r.actor, r.via, r.event_id) for r in retries} == {(OPERATOR, "web", event.id)}
    assert "retry of whmcs:1001" in text and OPERATOR in text  # the audit is on the page


def test_mark_resolved_keeps_the_status_and_records_who(as_operator, client, db, sim):
    answer = send(client, Action.CREATE, product=77)
    url = f"/admin/events/{answer['event_id']}"
    response = form_post(client, url, f"{url}/resolve", note="customer cancelled in WHMCS")
    assert response.status_code == 302
    event = db.get(Event, answer["event_id"])
    assert event.status is EventStatus.FAILED
    assert event.resolved_by == OPERATOR and event.resolved_at is not None
    (entry,) = db.scalars(select(AuditEntry).where(AuditEntry.action == "resolve"))
    assert entry.detail == {"note": "customer cancelled in WHMCS"}
    page = plain(text_of(client.get(url)))
    assert f"Resolved by {OPERATOR}" in page
    assert "marked resolved: customer cancelled in WHMCS" in page
    assert "Mark resolved" not in page
    # resolved events drop out of the unresolved filter and the bulk retry
    assert "No event matches." in plain(text_of(client.get("/admin/events?unresolved=1")))
    again = client.post(f"{url}/resolve", data={"csrf_token": csrf_from(client.get(url))})
    assert again.status_code == 302
    assert "was resolved by" in plain(text_of(client.get(url)))


def test_bulk_retry_confirms_the_count_then_queues(
    as_operator, client, app, db, sim, drain, config_tree
):
    for service in (2001, 2002, 2003):
        send(client, Action.CREATE, service, product=77)
    send(client, Action.CHANGE_PACKAGE, 2003, product=77)  # two events, one service
    send(client, Action.CREATE, 2004, product=1)  # applied: not retried
    confirm = client.get("/admin/events/retry?status=failed&source=whmcs")
    assert confirm.status_code == 200
    text = plain(text_of(confirm))
    assert "This reconciles 3 service(s) again, with 4 unresolved failed event(s)" in text
    assert "source=whmcs" in text
    assert db.scalar(select(Service.job_due_at).where(Service.service_ref == "2001")) is None

    use_settings(app, fixed_settings(config_tree, 77, "starter"))
    response = client.post(
        "/admin/events/retry",
        data={"csrf_token": csrf_from(confirm), "status": "failed", "source": "whmcs"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/events?status=failed&source=whmcs"
    assert "Queued 3 service(s) (4 failed event(s))" in plain(text_of(client.get("/admin/events")))
    queued = db.scalars(select(Event).where(Event.status == EventStatus.QUEUED)).all()
    assert len(queued) == 4 and {e.reason for e in queued} == {"retry_requested"}
    assert audit_actions(db).count("retry") == 3 and "bulk_retry" in audit_actions(db)
    bulk = db.scalar(select(AuditEntry).where(AuditEntry.action == "bulk_retry"))
    assert bulk.detail["services"] == 3 and bulk.detail["filter"] == {
        "status": "failed",
        "source": "whmcs",
    }
    assert sim.account("mail2001") is None  # queued only: the worker applies them
    assert [o.status for o in drain()] == ["applied"] * 3
    assert sim.account("mail2003")["quota_mailboxes"] == 5
    statuses = {e.status for e in db.scalars(select(Event))}
    assert statuses == {EventStatus.APPLIED}


def test_service_page_highlights_drift_and_reconciles(as_operator, client, sim, db):
    send(client, Action.CREATE, 1001, product=2)
    service_id = db.scalar(select(Service.id))
    # someone raises the quota by hand in the Mail Portal
    token = sim.ctl("POST", "tokens", json={"username": "admin"})["auth_token"]
    response = requests.patch(
        f"{sim.url}/api/v1/accounts/mail1001/",
        json={"quota_mailboxes": 99},
        auth=("admin", token),
        timeout=10,
    )
    assert response.ok
    url = f"/admin/services/{service_id}"
    assert "The account has not been read from the mail server yet." in plain(
        text_of(client.get(url))
    )
    form_post(client, url, f"{url}/refresh")
    page = text_of(client.get(url))
    text = plain(page)
    assert f"Mail server side as read at {datetime.now(UTC):%Y-%m-%d}" in text
    assert f"by {OPERATOR}" in text
    assert "Tier business" in text
    assert re.search(r'<tr class="differs">\s*<th scope="row">mailboxes', page)
    assert "mailboxes (differs) 25 99, 0 used" in text
    assert "set mailboxes 99 -> 25" in text
    assert 'class="differs"' in page and page.count('class="differs"') == 1

    response = form_post(client, url, f"{url}/reconcile")
    assert response.status_code == 302
    text = plain(text_of(client.get(url)))
    assert "Reconciled: 1 change(s) made on the mail server." in text
    assert "A reconcile ran after that read" in text
    form_post(client, url, f"{url}/refresh")
    assert "In sync" in plain(text_of(client.get(url)))
    assert sim.account("mail1001")["quota_mailboxes"] == 25
    (entry,) = db.scalars(select(AuditEntry).where(AuditEntry.action == "reconcile"))
    assert entry.service_id == service_id and entry.detail["outcome"] == "applied"
    assert "reconcile now: applied" in text


def test_event_page_says_when_the_mail_server_cannot_be_read(as_operator, client, db):
    # no simulator here: the configured mail server (127.0.0.1:9) refuses connections
    answer = send(client, Action.CREATE, 1001)
    assert answer["status"] == "queued"
    url = f"/admin/events/{answer['event_id']}"
    service_id = db.scalar(select(Service.id))
    form_post(client, url, f"/admin/services/{service_id}/refresh", event=answer["event_id"])
    response = client.get(url)
    assert response.status_code == 200
    text = plain(text_of(response))
    assert "Not refreshed: mailserver_unreachable" in text
    assert "The account has not been read from the mail server yet." in text
    assert "Billing wants" in text and "unknown" in text
    service = client.get(f"/admin/services/{service_id}")
    assert service.status_code == 200
    assert "The account has not been read from the mail server yet." in plain(text_of(service))


def test_attempts_show_each_call_and_the_error(as_operator, client, sim, db):
    sim.fault(kind="error_200", count=1, method="POST", path="/api/v1/accounts/")
    answer = send(client, Action.CREATE, 1001)
    assert answer["status"] == "queued"
    text = plain(text_of(client.get(f"/admin/events/{answer['event_id']}")))
    assert "error_body_with_200" in text
    assert "The mail server said OK but its answer reported an error" in text
    attempt = db.scalar(select(Attempt))
    assert any(c["error"] == "error_body_with_200" for c in attempt.calls)
    assert "POST /api/v1/accounts/ 200" in text


def test_mappings_page_lists_products_waiting(as_operator, client, app, sim, config_tree):
    send(client, Action.CREATE, 1001, product=77)
    send(client, Action.CREATE, 1002, product=77)
    send(client, Action.CREATE, 1003, product=78)
    page = text_of(client.get("/admin/mappings"))
    text = plain(page)
    assert "whmcs 77 2 2" in text and "whmcs 78 1 1" in text
    assert "starter 1 1 10 5 5120" in text
    assert "agency 20 20 unlimited 200 512000" in text
    assert "extra_mailboxes 0 0 0 1 1024" in text
    assert "mapped now" not in text
    use_settings(app, fixed_settings(config_tree, 77, "business"))
    page = text_of(client.get("/admin/mappings"))
    assert "mapped now: " in page
    link = re.search(r'href="(/admin/events/retry\?[^"]+)">retry them', page).group(1)
    confirm = plain(text_of(client.get(link.replace("&amp;", "&"))))
    assert "This reconciles 2 service(s) again, with 2 unresolved failed event(s)" in confirm


def test_audit_page_lists_staff_actions(as_operator, client, sim):
    answer = send(client, Action.CREATE, product=77)
    url = f"/admin/events/{answer['event_id']}"
    form_post(client, url, f"{url}/resolve")
    text = plain(text_of(client.get("/admin/audit")))
    assert "marked resolved" in text and "login" in text and OPERATOR in text


def test_missing_event_is_a_page_not_json(as_operator, client):
    response = client.get("/admin/events/999999")
    assert response.status_code == 404
    assert "there is no event 999999" in text_of(response)
    assert response.mimetype == "text/html"


def test_link_shows_the_account_then_binds_and_audits(as_operator, client, sim, db):
    sim.seed(
        {
            "accounts": [
                {
                    "username": "legacy88",
                    "perm_level": "DomainAdmin",
                    "recovery_email": "boss@legacy.example",
                    "enabled": 1,
                }
            ]
        }
    )
    answer = send(client, Action.SUSPEND, 88)
    assert answer["reason"] == "not_linked"
    service_id = db.scalar(select(Service.id).where(Service.service_ref == "88"))
    page = plain(text_of(client.get(f"/admin/services/{service_id}")))
    assert "not linked" in page
    sim.clear_log()
    confirm = f"/admin/services/{service_id}/link?username=legacy88"
    shown = plain(text_of(client.get(confirm)))
    assert "boss@legacy.example" in shown and "Link to legacy88" in shown
    assert sim.writes() == []
    assert db.get(Service, service_id).bound_at is None  # showing binds nothing
    response = form_post(client, confirm, f"/admin/services/{service_id}/link", username="legacy88")
    assert response.status_code == 302
    row = db.get(Service, service_id)
    assert (row.bound_how, row.bound_by, row.username) == ("linked", OPERATOR, "legacy88")
    entry = db.scalars(select(AuditEntry).where(AuditEntry.action == "link")).one()
    assert (entry.actor, entry.via, entry.detail["recovery_email"]) == (
        OPERATOR,
        "web",
        "boss@legacy.example",
    )
    assert sim.writes() == []
    page = plain(text_of(client.get(f"/admin/services/{service_id}")))
    assert "linked by ops@example.com" in page


def test_the_advice_says_reload_and_the_mappings_page_when_the_config_was_loaded(
    as_operator, client, app, sim, config_tree, tmp_path
):
    import yaml

    from bridge.admin.views import fmt_time
    from bridge.config import load_config

    answer = send(client, Action.CREATE, product=77)
    event_page = plain(text_of(client.get(f"/admin/events/{answer['event_id']}")))
    assert "reload the bridge, then press Retry" in event_page and "restart" not in event_page
    file = tmp_path / "bridge.yaml"
    file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    settings = load_config(file, environ={})
    use_settings(app, settings)  # what a reload does
    page = plain(text_of(client.get("/admin/mappings")))
    assert f"As configured in {file} , loaded {fmt_time(settings.loaded_at)};" in page
    assert "reload the bridge" in page and "restart" not in page
    assert "make reload" in page and "bridge mappings check" in page
