"""DomainAdmin cascade enable/disable/delete and ownership transfer.

nmsim/README.md: "Cascade enable and disable", "Cascade delete", "Ownership transfer".
"""

from __future__ import annotations

import pytest

from tests.nmsim.conftest import Nms

ENABLE = "/api/v1/accounts/cascade/domainadmin/{}/enable/"
DISABLE = "/api/v1/accounts/cascade/domainadmin/{}/disable/"
DELETE = "/api/v1/accounts/cascade/domainadmin/{}/"
TRANSFER = "/api/v1/accounts/cascade/ownership/domainadmin/{}/"


def enabled(nms: Nms, username: str) -> int:
    return int(nms.account(username)["enabled"])


def test_disable_covers_domain_admin_and_its_mail_users_only(world: Nms) -> None:
    resp = world.master().patch(DISABLE.format("reseller-a"))
    assert resp.status_code == 204
    assert resp.content == b"" and resp.headers["Content-Type"].startswith("text/html")
    assert enabled(world, "reseller-a") == 0
    assert enabled(world, "ann@alpha.example") == 0
    assert enabled(world, "reseller-b") == 1
    assert enabled(world, "bob@beta.example") == 1


def test_enable_turns_everyone_on_without_memory(world: Nms) -> None:
    world.seed(
        {"accounts": [{"username": "off@alpha.example", "perm_level": "MailUser", "enabled": 0}]}
    )
    master = world.master()
    assert master.patch(DISABLE.format("reseller-a")).status_code == 204
    assert master.patch(ENABLE.format("reseller-a")).status_code == 204
    assert enabled(world, "reseller-a") == 1
    assert enabled(world, "ann@alpha.example") == 1
    assert enabled(world, "off@alpha.example") == 1  # no memory of prior state


def test_per_account_patch_restores_state_after_enable(world: Nms) -> None:
    master = world.master()
    master.patch(ENABLE.format("reseller-a"))
    resp = master.patch("/api/v1/accounts/ann@alpha.example/", json={"enabled": 0})
    assert resp.status_code == 200
    assert enabled(world, "ann@alpha.example") == 0


def test_disabled_domain_admin_tokens_stop(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    world.master().patch(DISABLE.format("reseller-a"))
    assert reseller.get("/api/v1/accounts/").status_code == 401


@pytest.mark.parametrize("route", [ENABLE, DISABLE, TRANSFER])
def test_cascade_routes_need_master_admin(world: Nms, route: str) -> None:
    reseller = world.as_user("reseller-a")
    method = "POST" if route == TRANSFER else "PATCH"
    assert reseller.request(method, route.format("reseller-a")).status_code == 403


def test_cascade_delete_needs_master_admin(world: Nms) -> None:
    assert world.as_user("reseller-a").delete(DELETE.format("reseller-b")).status_code == 403


@pytest.mark.parametrize(("username", "status"), [("ghost", 404), ("ann@alpha.example", 400)])
def test_cascade_target_must_be_a_domain_admin(world: Nms, username: str, status: int) -> None:
    master = world.master()
    assert master.patch(DISABLE.format(username)).status_code == status
    assert master.delete(DELETE.format(username)).status_code == status
    assert master.post(TRANSFER.format(username)).status_code == status


def test_unknown_cascade_action_is_404(world: Nms) -> None:
    resp = world.master().patch("/api/v1/accounts/cascade/domainadmin/reseller-a/suspend/")
    assert resp.status_code == 404


def test_cascade_delete_removes_domain_admin_and_dependents(world: Nms) -> None:
    master = world.master()
    master.post(
        "/api/v1/aliases/",
        json={"alias": "info@alpha.example", "recipients": "x@elsewhere.example"},
    )
    resp = master.delete(DELETE.format("reseller-a"))
    assert resp.status_code == 204 and resp.content == b""
    state = world.ctl.get("/_sim/state").json()
    names = {a["username"] for a in state["accounts"]}
    assert "reseller-a" not in names and "ann@alpha.example" not in names
    assert {"reseller-b", "bob@beta.example"} <= names
    assert "alpha.example" not in {d["domain"] for d in state["domains"]}
    assert state["aliases"] == []


def test_cascade_delete_can_keep_domains(world: Nms) -> None:
    world.config(cascade_delete_domains=False)
    assert world.master().delete(DELETE.format("reseller-a")).status_code == 204
    state = world.ctl.get("/_sim/state").json()
    domain = next(d for d in state["domains"] if d["domain"] == "alpha.example")
    assert domain["owner"] is None
    assert "ann@alpha.example" not in {a["username"] for a in state["accounts"]}


def test_transfer_moves_ownership_and_used_quota(world: Nms) -> None:
    master = world.master()
    # Customer moves alpha.example from reseller-a to reseller-b, as the bridge does it
    # (docs/design.md#transfer-of-ownership).
    assert master.patch(
        "/api/v1/accounts/reseller-b/", json={"domains": "beta.example, alpha.example"}
    ).ok
    assert master.patch("/api/v1/accounts/reseller-a/", json={"domains": ""}).ok
    before = world.account("reseller-a")
    assert before["quota_mailboxes_used"] == 1  # still owned until the transfer
    resp = master.post(TRANSFER.format("reseller-b"))
    assert resp.status_code == 204 and resp.content == b""
    a, b = world.account("reseller-a"), world.account("reseller-b")
    assert (a["quota_domains_used"], a["quota_mailboxes_used"], a["storagequota_used"]) == (0, 0, 0)
    assert (b["quota_domains_used"], b["quota_mailboxes_used"], b["storagequota_used"]) == (
        2,
        2,
        1000,
    )


def test_transfer_takes_over_objects_created_by_master_admin(world: Nms) -> None:
    master = world.master()
    body = {
        "username": "new@alpha.example",
        "password": "Str0ngPassword",
        "perm_level": "MailUser",
        "api_access": 1,
        "enabled": 1,
        "recovery_email": "r@x.org",
        "language": "en",
        "domain": "alpha.example",
        "storagequota_total": 100,
    }
    assert master.post("/api/v1/accounts/", json=body).ok
    assert world.account("reseller-a")["quota_mailboxes_used"] == 1  # unowned until transfer
    assert master.post(TRANSFER.format("reseller-a")).status_code == 204
    assert world.account("reseller-a")["quota_mailboxes_used"] == 2


def test_transfer_without_headroom_is_refused(world: Nms) -> None:
    master = world.master()
    master.patch("/api/v1/accounts/reseller-b/", json={"domains": "beta.example, alpha.example"})
    master.patch("/api/v1/accounts/reseller-b/", json={"quota_mailboxes": 1})
    resp = master.post(TRANSFER.format("reseller-b"))
    assert resp.status_code == 409
    assert "quota_mailboxes" in resp.json()["message"]
    assert world.account("reseller-b")["quota_mailboxes_used"] == 1


def test_transfer_over_quota_allowed_when_switch_is_allow(world: Nms) -> None:
    world.config(quota_below_usage="allow")
    master = world.master()
    master.patch("/api/v1/accounts/reseller-b/", json={"domains": "beta.example, alpha.example"})
    master.patch("/api/v1/accounts/reseller-b/", json={"quota_mailboxes": 1})
    assert master.post(TRANSFER.format("reseller-b")).status_code == 204
    b = world.account("reseller-b")
    assert (b["quota_mailboxes"], b["quota_mailboxes_used"]) == (1, 2)
