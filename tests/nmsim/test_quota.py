"""Quota accounting, storage pool, quota changes and statistics.

nmsim/README.md: "Quota accounting", and the assumptions "Ownership and storage",
"Quota below usage", "No unlimited encoding", "Quota statistics", "Mail statistics".
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.nmsim.conftest import PASSWORD, Nms


def mailbox(name: str, storage: int) -> dict[str, Any]:
    return {
        "username": f"{name}@alpha.example",
        "password": PASSWORD,
        "perm_level": "MailUser",
        "api_access": 1,
        "enabled": 1,
        "recovery_email": "r@x.org",
        "language": "en",
        "domain": "alpha.example",
        "storagequota_total": storage,
    }


def test_mailbox_quota_refuses_create_beyond_it(world: Nms) -> None:
    reseller = world.as_user("reseller-a")  # quota_mailboxes 3, one used, pool 1000 (500 used)
    assert reseller.post("/api/v1/accounts/", json=mailbox("two", 100)).ok
    assert reseller.post("/api/v1/accounts/", json=mailbox("three", 100)).ok
    resp = reseller.post("/api/v1/accounts/", json=mailbox("four", 100))
    assert resp.status_code == 409
    assert resp.json()["error"] == "quota_exceeded"
    assert "quota_mailboxes" in resp.json()["message"]
    assert world.master().get("/api/v1/accounts/four@alpha.example/").status_code == 404


def test_storage_pool_limits_mailbox_quotas(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    resp = reseller.post("/api/v1/accounts/", json=mailbox("big", 501))
    assert resp.status_code == 409
    assert "storagequota_total" in resp.json()["message"]
    assert reseller.post("/api/v1/accounts/", json=mailbox("fits", 500)).ok
    assert world.account("reseller-a")["storagequota_used"] == 1000


def test_raising_a_mailbox_quota_beyond_the_pool_is_refused(world: Nms) -> None:
    master = world.master()
    resp = master.patch("/api/v1/accounts/ann@alpha.example/", json={"storagequota_total": 1001})
    assert resp.status_code == 409
    assert master.patch("/api/v1/accounts/ann@alpha.example/", json={"storagequota_total": 1000}).ok


@pytest.mark.parametrize(
    ("field", "value"),
    [("quota_mailboxes", 0), ("quota_domains", 0), ("storagequota_total", 499)],
)
def test_lowering_quota_below_usage_is_refused_by_default(
    world: Nms, field: str, value: int
) -> None:
    resp = world.master().patch("/api/v1/accounts/reseller-a/", json={field: value})
    assert resp.status_code == 409
    assert resp.json()["error"] == "quota_below_usage"
    assert field in resp.json()["message"]


def test_lowering_quota_to_usage_is_fine(world: Nms) -> None:
    resp = world.master().patch("/api/v1/accounts/reseller-a/", json={"quota_mailboxes": 1})
    assert resp.status_code == 200


def test_lowering_quota_below_usage_allowed_by_switch(world: Nms) -> None:
    world.config(quota_below_usage="allow")
    resp = world.master().patch("/api/v1/accounts/reseller-a/", json={"quota_mailboxes": 0})
    assert resp.status_code == 200
    account = world.master().get("/api/v1/accounts/reseller-a/").json()
    assert (account["quota_mailboxes"], account["quota_mailboxes_used"]) == (0, 1)


def test_mailbox_quota_below_its_disk_usage_is_refused(world: Nms) -> None:
    resp = world.master().patch(
        "/api/v1/accounts/ann@alpha.example/", json={"storagequota_total": 400}
    )
    assert resp.status_code == 409


def test_no_unlimited_encoding_by_default(world: Nms) -> None:
    assert (
        world.master()
        .patch("/api/v1/accounts/reseller-a/", json={"quota_mailboxes": -1})
        .status_code
        == 400
    )


def test_configured_unlimited_sentinel(world: Nms) -> None:
    world.config(unlimited_sentinel=-1)
    master = world.master()
    assert master.patch("/api/v1/accounts/reseller-a/", json={"quota_mailboxes": -1}).ok
    reseller = world.as_user("reseller-a")
    for name in ("b", "c", "d", "e"):
        assert reseller.post("/api/v1/accounts/", json=mailbox(name, 1)).ok


def test_master_admin_objects_are_not_charged(world: Nms) -> None:
    world.master().post("/api/v1/accounts/", json=mailbox("byadmin", 100))
    assert world.account("reseller-a")["quota_mailboxes_used"] == 1


# ----- statistics ------------------------------------------------------------------------------


def test_quota_stats_is_array_sorted_by_use_percent(world: Nms) -> None:
    resp = world.master().get("/api/v1/stats/quota/?perm_level=MailUser")
    assert resp.status_code == 200
    assert resp.json() == [
        {
            "username": "ann@alpha.example",
            "storagequota_total": 500,
            "storagequota_used": 403,
            "use_percent": 80,
        },
        {
            "username": "bob@beta.example",
            "storagequota_total": 500,
            "storagequota_used": 389,
            "use_percent": 77,
        },
    ]


def test_quota_stats_for_domain_admins_use_allocated_storage(world: Nms) -> None:
    rows = world.master().get("/api/v1/stats/quota/?perm_level=DomainAdmin").json()
    assert {r["username"]: r["use_percent"] for r in rows} == {"reseller-a": 50, "reseller-b": 50}


def test_quota_stats_zero_total_is_zero_percent(world: Nms) -> None:
    world.seed(
        {
            "accounts": [
                {"username": "z@alpha.example", "perm_level": "MailUser", "storagequota_total": 0}
            ]
        }
    )
    rows = world.master().get("/api/v1/stats/quota/?search=z@").json()
    assert rows[0]["use_percent"] == 0


def test_domain_admin_quota_stats_only_its_mail_users(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    rows = reseller.get("/api/v1/stats/quota/").json()
    assert [r["username"] for r in rows] == ["ann@alpha.example"]
    assert reseller.get("/api/v1/stats/quota/?perm_level=DomainAdmin").status_code == 400


def test_mail_user_cannot_read_stats(world: Nms) -> None:
    ann = world.as_user("ann@alpha.example")
    assert ann.get("/api/v1/stats/quota/").status_code == 403
    assert ann.get("/api/v1/stats/mail/").status_code == 403


def test_mail_stats(world: Nms) -> None:
    world.as_user("reseller-a").post(
        "/api/v1/aliases/", json={"alias": "i@alpha.example", "recipients": "x@y.example"}
    )
    resp = world.master().get("/api/v1/stats/mail/")
    assert resp.status_code == 200
    body = resp.json()
    assert (body["domains"], body["mailboxes"], body["aliases"]) == (3, 2, 1)
    assert body["relay_domains"] == body["domain_aliases"] == body["sender_addresses"] == 0
    assert {"reseller-a": 3} in body["domainadmin_usage"]
    assert {"reseller-b": 2} in body["domainadmin_usage"]


def test_mail_stats_is_master_only(world: Nms) -> None:
    assert world.as_user("reseller-a").get("/api/v1/stats/mail/").status_code == 403


def test_concurrent_creates_never_overshoot_a_quota(world: Nms) -> None:
    token = world.as_user("reseller-a").auth[1]  # type: ignore[index]

    def create(i: int) -> int:
        with world.as_token("reseller-a", token) as client:
            return client.post("/api/v1/accounts/", json=mailbox(f"c{i}", 10)).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(create, range(16)))
    assert statuses.count(200) == 2  # quota_mailboxes 3, one already used
    assert statuses.count(409) == 14
    assert world.account("reseller-a")["quota_mailboxes_used"] == 3
