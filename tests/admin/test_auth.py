"""Console login, sessions, CSRF, roles and the login rate limit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from bridge.app import create_app
from bridge.config import parse_settings
from bridge.db import utcnow
from bridge.lifecycle import Action, EventStatus
from bridge.models import AuditEntry, Event, LoginAttempt, StaffRole, StaffUser
from bridge.support import staff as staff_mod
from bridge.web import runtime
from tests.admin.conftest import (
    OPERATOR,
    PASSWORD,
    PRODUCTION_SCRYPT_N,
    add_staff,
    csrf_from,
    form_post,
    log_in,
    send,
)


def audit_rows(db, action=None):
    query = select(AuditEntry).order_by(AuditEntry.id)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(db.scalars(query))


def test_pages_need_a_login(client):
    response = client.get("/admin/events?status=failed")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")
    assert response.headers["Location"] == "/admin/login?next=/admin/events?status%3Dfailed"


def test_login_then_logout_are_audited(client, operator, db):
    response = log_in(client, operator, REMOTE_ADDR="10.0.0.7")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/events"
    page = client.get("/admin/events")
    assert page.status_code == 200
    assert OPERATOR in page.get_data(as_text=True)
    (login,) = audit_rows(db, "login")
    assert (login.actor, login.via, login.ip) == (OPERATOR, "web", "10.0.0.7")
    assert login.staff_id == db.scalar(select(StaffUser.id))
    assert db.scalar(select(StaffUser.last_login_at)) is not None

    response = form_post(client, "/admin/events", "/admin/logout")
    assert response.status_code == 302
    assert client.get("/admin/events").status_code == 302
    assert [a.action for a in audit_rows(db)] == ["login", "logout"]


def test_login_goes_back_to_the_page_asked_for_but_never_elsewhere(client, operator):
    page = client.get("/admin/login")
    token = csrf_from(page)
    response = client.post(
        "/admin/login",
        data={
            "email": operator,
            "password": PASSWORD,
            "csrf_token": token,
            "next": "/admin/mappings",
        },
    )
    assert response.headers["Location"] == "/admin/mappings"
    client.post("/admin/logout", data={"csrf_token": csrf_from(client.get("/admin/mappings"))})
    for target in ("https://evil.example/", "//evil.example/admin/", "/hooks/whmcs"):
        token = csrf_from(client.get("/admin/login"))
        response = client.post(
            "/admin/login",
            data={"email": operator, "password": PASSWORD, "csrf_token": token, "next": target},
        )
        assert response.headers["Location"] == "/admin/events", target
        client.post("/admin/logout", data={"csrf_token": csrf_from(client.get("/admin/events"))})


def test_wrong_password_and_unknown_email_get_the_same_answer(client, operator, db):
    wrong = log_in(client, operator, "Not-The-Password-1")
    unknown = log_in(client, "nobody@example.com")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "wrong e-mail or password" in response.get_data(as_text=True)
    failures = audit_rows(db, "login_failed")
    assert [f.detail["email"] for f in failures] == [operator, "nobody@example.com"]
    assert {f.detail["reason"] for f in failures} == {"invalid_login"}
    assert client.get("/admin/events").status_code == 302


def test_failed_logins_are_rate_limited_per_email_and_address(client, operator, db, settings):
    for _ in range(staff_mod.LOGIN_FAILURES_ALLOWED):
        assert (
            log_in(client, operator, "Wrong-Password-123", REMOTE_ADDR="10.0.0.1").status_code
            == 401
        )
    # the sixth try is refused even with the right password, and without checking it
    blocked = log_in(client, operator, PASSWORD, REMOTE_ADDR="10.0.0.1")
    assert blocked.status_code == 429
    assert "too many failed logins; try again in 15 minutes" in blocked.get_data(as_text=True)
    assert 0 < int(blocked.headers["Retry-After"]) <= 15 * 60 + 1
    # a refused try writes nothing (a flood of them cannot fill the audit log)
    assert len(audit_rows(db, "login_failed")) == staff_mod.LOGIN_FAILURES_ALLOWED
    # the limit lives in the database: another process (a second gunicorn worker) sees it
    other = create_app(settings, configure_logs=False)
    other_client = other.test_client()
    assert log_in(other_client, operator, PASSWORD, REMOTE_ADDR="10.0.0.1").status_code == 429
    runtime(other).engine.dispose()
    # another address (or another e-mail) is not blocked
    assert log_in(client, operator, PASSWORD, REMOTE_ADDR="10.0.0.2").status_code == 302
    assert db.scalar(select(func.count()).select_from(LoginAttempt)) == 5


def test_a_successful_login_clears_the_failures_of_that_address(client, operator, db):
    for _ in range(3):
        log_in(client, operator, "Wrong-Password-123")
    assert log_in(client, operator).status_code == 302
    assert db.scalar(select(func.count()).select_from(LoginAttempt)) == 0


def test_post_without_a_valid_csrf_token_is_refused(as_operator, client, app, db):
    send(client, Action.CREATE, product=77)
    event_id = db.scalar(select(Event.id))
    url = f"/admin/events/{event_id}/resolve"
    missing = client.post(url, data={})
    forged = client.post(url, data={"csrf_token": "forged.token.value"})
    # a token signed with the right key but for another session
    with app.test_client() as stranger:
        foreign = csrf_from(stranger.get("/admin/login"))
    other_session = client.post(url, data={"csrf_token": foreign})
    for response, why in (
        (missing, "the form carried no CSRF token"),
        (forged, "the CSRF token of the form is not valid"),
        (other_session, "the form belongs to another session"),
    ):
        assert response.status_code == 400
        text = response.get_data(as_text=True)
        assert "This form could not be accepted" in text and why in text
    assert db.get(Event, event_id).resolved_at is None
    assert audit_rows(db, "resolve") == []


def test_an_expired_csrf_token_is_refused(as_operator, client, monkeypatch):
    token = csrf_from(client.get("/admin/events"))
    monkeypatch.setattr("bridge.admin.auth.CSRF_MAX_AGE_S", -1)
    response = client.post("/admin/logout", data={"csrf_token": token})
    assert response.status_code == 400
    assert "the form is too old" in response.get_data(as_text=True)


def test_login_form_needs_its_csrf_token_too(client, operator):
    response = client.post("/admin/login", data={"email": operator, "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/admin/events").status_code == 302


def test_viewer_reads_but_cannot_retry_or_resolve(as_viewer, client, db):
    send(client, Action.CREATE, product=77)
    event_id = db.scalar(select(Event.id))
    page = client.get(f"/admin/events/{event_id}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "The billing product has no tier" in text
    assert ">Retry</button>" not in text and "Mark resolved" not in text
    assert "Your role is viewer" in text
    for action in ("retry", "resolve"):
        response = client.post(
            f"/admin/events/{event_id}/{action}", data={"csrf_token": csrf_from(page)}
        )
        assert response.status_code == 403
        assert "your role (viewer) can look but not change anything" in response.get_data(
            as_text=True
        )
    assert client.get("/admin/events/retry?status=failed").status_code == 403
    event = db.get(Event, event_id)
    assert event.status is EventStatus.FAILED and event.resolved_at is None
    assert [a.action for a in audit_rows(db)] == ["login"]


def test_console_refuses_to_start_without_a_secret_key(config_tree, client):
    config_tree["admin"]["secret_key"] = ""
    app = create_app(parse_settings(config_tree, {}), configure_logs=False)
    response = app.test_client().get("/admin/login")
    assert response.status_code == 503
    text = response.get_data(as_text=True)
    assert "The staff console is switched off" in text
    assert "admin.secret_key is empty" in text
    runtime(app).engine.dispose()


def test_a_password_change_ends_existing_sessions(as_operator, client, app):
    assert client.get("/admin/events").status_code == 200
    with runtime(app).transaction() as session:
        user = staff_mod.find_staff(session, OPERATOR)
        staff_mod.set_password(session, user, "A-New-Password-2025")
    assert client.get("/admin/events").status_code == 302


def test_a_disabled_account_cannot_log_in(client, app, db):
    add_staff(app, "gone@example.com", StaffRole.OPERATOR)
    with runtime(app).transaction() as session:
        staff_mod.find_staff(session, "gone@example.com").disabled_at = utcnow()
    assert log_in(client, "gone@example.com").status_code == 401


def test_passwords_are_scrypt_hashes_rehashed_when_the_cost_rises(app, client, monkeypatch):
    assert PRODUCTION_SCRYPT_N >= 2**15  # what ships; the fixtures lower it for speed
    add_staff(app, "a@example.com", StaffRole.VIEWER)
    with runtime(app).sessions() as session:
        stored = staff_mod.find_staff(session, "a@example.com").password_hash
    assert stored.startswith("scrypt$1024$8$1$") and PASSWORD not in stored
    assert staff_mod.verify_password(PASSWORD, stored)
    assert not staff_mod.verify_password(PASSWORD + "x", stored)
    assert not staff_mod.verify_password(PASSWORD, "not-a-hash")

    monkeypatch.setattr(staff_mod, "SCRYPT_N", 2**11)
    assert log_in(client, "a@example.com").status_code == 302
    with runtime(app).sessions() as session:
        assert staff_mod.find_staff(session, "a@example.com").password_hash.startswith(
            "scrypt$2048$8$1$"
        )


def test_staff_passwords_must_be_long_enough(app):
    with (
        pytest.raises(staff_mod.StaffError, match="at least 12 characters"),
        runtime(app).sessions() as session,
    ):
        staff_mod.add_staff(session, "x@example.com", "short", StaffRole.VIEWER, None)


def test_session_cookie_and_pages_are_protected(client, operator):
    cookie = log_in(client, operator).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    response = client.get("/admin/events")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


# ---- the login form cannot starve the webhooks (issue 11, item 2) --------------------------


def test_one_address_is_limited_whatever_the_email_before_any_hash(client, operator, db):
    allowed = staff_mod.LOGIN_FAILURES_PER_ADDRESS
    for n in range(allowed):
        response = log_in(
            client, f"guess{n}@example.com", "Wrong-Password-123", REMOTE_ADDR="10.9.0.1"
        )
        assert response.status_code == 401
    # the next try from that address is refused before its password is looked at, even a
    # right one for an e-mail it never tried, and it leaves no row behind
    blocked = log_in(client, operator, PASSWORD, REMOTE_ADDR="10.9.0.1")
    assert blocked.status_code == 429
    assert "too many failed logins" in blocked.get_data(as_text=True)
    assert "Retry-After" in blocked.headers
    assert db.scalar(select(func.count()).select_from(LoginAttempt)) == allowed
    assert len(audit_rows(db, "login_failed")) == allowed
    # other addresses are not affected
    assert log_in(client, operator, REMOTE_ADDR="10.9.0.2").status_code == 302


def test_a_login_finding_every_hash_slot_taken_is_answered_at_once(client, operator, db):
    # every slot of this process busy (as under a flood of logins from many addresses)
    taken = [staff_mod._hash_slots.acquire(blocking=False) for _ in range(staff_mod.HASH_SLOTS)]
    assert all(taken)
    try:
        busy = log_in(client, operator)
    finally:
        for _ in taken:
            staff_mod._hash_slots.release()
    assert busy.status_code == 503
    assert "try again in a few seconds" in busy.get_data(as_text=True)
    assert busy.headers["Retry-After"] == "5"
    # not a failure: nothing written, and the next try (a slot free) logs in
    assert db.scalar(select(func.count()).select_from(LoginAttempt)) == 0
    assert audit_rows(db) == []
    assert log_in(client, operator).status_code == 302


# ---- sessions end for every browser at once (issue 11, item 5) -----------------------------


def test_logout_ends_every_session_of_that_person(app, operator, db):
    first, second = app.test_client(), app.test_client()
    assert log_in(first, operator).status_code == 302
    assert log_in(second, operator).status_code == 302
    stolen = first.get_cookie("session").value  # a copy of the cookie, taken before logout
    assert second.get("/admin/events").status_code == 200

    assert form_post(first, "/admin/events", "/admin/logout").status_code == 302
    assert second.get("/admin/events").status_code == 302  # the other browser too
    replay = app.test_client()
    replay.set_cookie("session", stolen)
    assert replay.get("/admin/events").status_code == 302  # and the copied cookie
    (logout,) = audit_rows(db, "logout")
    assert logout.actor == operator and logout.via == "web"


@pytest.mark.parametrize("change", ["disable", "role", "password"])
def test_disable_role_change_and_password_reset_end_sessions(as_operator, client, app, change):
    from bridge.support.actions import Actor

    assert client.get("/admin/events").status_code == 200
    rt, who = runtime(app), Actor("cli:test", "cli")
    if change == "disable":
        staff_mod.disable_staff(rt, OPERATOR, who)
    elif change == "role":
        staff_mod.set_role(rt, OPERATOR, StaffRole.VIEWER, who)
    else:
        staff_mod.reset_password(rt, OPERATOR, "Another-Password-42", who)
    assert client.get("/admin/events").status_code == 302


def test_a_disabled_persons_api_tokens_stop_at_once_and_stay_revoked(app, client, db):
    from bridge.support.actions import Actor
    from tests.admin.conftest import make_token

    add_staff(app, "bot@example.com", StaffRole.OPERATOR)
    headers = {"Authorization": f"Bearer {make_token(app, 'bot@example.com')}"}
    assert client.get("/api/me", headers=headers).status_code == 200
    who = Actor("cli:test", "cli")
    staff_mod.disable_staff(runtime(app), "bot@example.com", who)
    assert client.get("/api/me", headers=headers).status_code == 401
    staff_mod.enable_staff(runtime(app), "bot@example.com", who)
    assert client.get("/api/me", headers=headers).status_code == 401  # make a new one
    assert log_in(client, "bot@example.com").status_code == 302  # the login works again
    (disabled,) = audit_rows(db, "staff_disabled")
    assert disabled.detail == {"email": "bot@example.com", "tokens_revoked": 1}
