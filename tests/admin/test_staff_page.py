"""The console's staff page (admins only): add, disable, enable, role, password, remove; each
change audited, and the last active admin kept."""

from __future__ import annotations

import re
from html import unescape

import pytest
from sqlalchemy import select

from bridge.models import AuditEntry, StaffRole, StaffUser
from bridge.support.staff import verify_password
from tests.admin.conftest import OPERATOR, PASSWORD, add_staff, form_post, log_in

ADMIN = "boss@example.com"
NEW_PASSWORD = "Fresh-Password-2026"


def plain(response) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))).split())


@pytest.fixture
def as_admin(app, client):
    add_staff(app, ADMIN, StaffRole.ADMIN)
    assert log_in(client, ADMIN).status_code == 302
    return client


def staff_id(db, email: str) -> int:
    return db.scalar(select(StaffUser.id).where(StaffUser.email == email))


def change(client, db, email: str, what: str, **form):
    return form_post(client, "/admin/staff", f"/admin/staff/{staff_id(db, email)}/{what}", **form)


def test_only_admins_see_the_staff_page(app, as_operator, client):
    assert "/admin/staff" not in client.get("/admin/events").get_data(as_text=True)
    page = client.get("/admin/staff")
    assert page.status_code == 403
    assert "cannot manage staff accounts; ask an admin" in plain(page)
    other = app.test_client()
    add_staff(app, ADMIN, StaffRole.ADMIN)
    log_in(other, ADMIN)
    assert 'href="/admin/staff"' in other.get("/admin/events").get_data(as_text=True)
    listed = plain(other.get("/admin/staff"))
    assert f"{ADMIN} (you) admin active" in listed and f"{OPERATOR} operator active" in listed


def test_an_admin_disables_an_operator_and_their_session_ends(app, as_admin, client, db):
    add_staff(app, OPERATOR, StaffRole.OPERATOR)
    theirs = app.test_client()
    assert log_in(theirs, OPERATOR).status_code == 302

    assert change(client, db, OPERATOR, "disable").status_code == 302
    assert "Disabled ops@example.com: logged out everywhere" in plain(client.get("/admin/staff"))
    assert theirs.get("/admin/events").status_code == 302
    assert log_in(theirs, OPERATOR).status_code == 401
    entry = db.scalar(select(AuditEntry).where(AuditEntry.action == "staff_disabled"))
    assert (entry.actor, entry.via, entry.detail["email"]) == (ADMIN, "web", OPERATOR)

    change(client, db, OPERATOR, "enable")
    assert log_in(theirs, OPERATOR).status_code == 302


def test_role_password_add_and_remove_from_the_page(app, as_admin, client, db):
    add_staff(app, OPERATOR, StaffRole.OPERATOR)
    change(client, db, OPERATOR, "role", role="viewer")
    assert db.scalar(select(StaffUser.role).where(StaffUser.email == OPERATOR)) is StaffRole.VIEWER

    mismatch = change(client, db, OPERATOR, "password", password=NEW_PASSWORD, password_again="x")
    assert mismatch.status_code == 302
    assert "password_mismatch: the two passwords differ" in plain(client.get("/admin/staff"))
    change(client, db, OPERATOR, "password", password=NEW_PASSWORD, password_again=NEW_PASSWORD)
    stored = db.scalar(select(StaffUser.password_hash).where(StaffUser.email == OPERATOR))
    assert verify_password(NEW_PASSWORD, stored) and not verify_password(PASSWORD, stored)

    form_post(
        client,
        "/admin/staff",
        "/admin/staff",
        email="new@example.com",
        role="operator",
        password=NEW_PASSWORD,
        password_again=NEW_PASSWORD,
    )
    assert "Added operator new@example.com." in plain(client.get("/admin/staff"))

    unconfirmed = change(client, db, "new@example.com", "remove")
    assert unconfirmed.status_code == 302 and staff_id(db, "new@example.com") is not None
    change(client, db, "new@example.com", "remove", confirm="yes")
    assert staff_id(db, "new@example.com") is None
    actions = [a.action for a in db.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert actions == [
        "login",
        "staff_role_changed",
        "staff_password_reset",
        "staff_added",
        "staff_removed",
    ]
    audit_page = plain(client.get("/admin/audit"))
    assert "role of ops@example.com: operator -> viewer" in audit_page
    assert "staff new@example.com removed" in audit_page


def test_the_last_active_admin_cannot_be_disabled_demoted_or_removed(as_admin, client, db):
    for what, form in (
        ("disable", {}),
        ("role", {"role": "operator"}),
        ("remove", {"confirm": "yes"}),
    ):
        assert change(client, db, ADMIN, what, **form).status_code == 302
        text = plain(client.get("/admin/staff"))
        assert "last_admin: boss@example.com is the last active admin" in text, what
    admin = db.scalar(select(StaffUser).where(StaffUser.email == ADMIN))
    assert admin.role is StaffRole.ADMIN and admin.disabled_at is None
    assert client.get("/admin/events").status_code == 200  # still logged in


def test_a_wrong_method_on_a_console_page_says_which_are_allowed(as_admin, client):
    response = client.get("/admin/logout")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"].split(", ")
