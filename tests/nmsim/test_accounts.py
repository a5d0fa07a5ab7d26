"""Accounts: create, list, get, PATCH, delete, password policy and permissions.

nmsim/README.md: "Creating accounts", "Permissions", and the assumptions
"Create requirements", "Names and letter case", "PATCH echo and field rules",
"Single account GET", "Plain account delete".
"""

from __future__ import annotations

from typing import Any

import pytest
from passlib.hash import sha512_crypt

from tests.nmsim.conftest import PASSWORD, Nms

DA_KEYS = {
    "username",
    "perm_level",
    "enabled",
    "api_access",
    "recovery_email",
    "language",
    "domains",
    "quota_domains",
    "quota_domains_used",
    "quota_domainaliases",
    "quota_domainaliases_used",
    "quota_aliases",
    "quota_aliases_used",
    "quota_mailboxes",
    "quota_mailboxes_used",
    "storagequota_total",
    "storagequota_used",
    "password_hash",
}


def master_admin(**overrides: Any) -> dict[str, Any]:
    body = {
        "username": "ops",
        "password": PASSWORD,
        "perm_level": "MasterAdmin",
        "api_access": 1,
        "enabled": 1,
        "recovery_email": "ops@example.org",
        "language": "en",
    }
    return {**body, **overrides}


def domain_admin(**overrides: Any) -> dict[str, Any]:
    body = master_admin(username="reseller-c", perm_level="DomainAdmin")
    body.update(
        domains="",
        quota_domains=2,
        quota_domainaliases=1,
        quota_aliases=4,
        quota_mailboxes=5,
        storagequota_total=2048,
    )
    return {**body, **overrides}


def mail_user(**overrides: Any) -> dict[str, Any]:
    body = master_admin(username="carl@alpha.example", perm_level="MailUser")
    body.update(domain="alpha.example", storagequota_total=100)
    return {**body, **overrides}


# ----- create -------------------------------------------------------------------------------


def test_create_master_admin_echoes_fields_without_password(nms: Nms) -> None:
    resp = nms.master().post("/api/v1/accounts/", json=master_admin())
    assert resp.status_code == 200
    assert resp.json() == {
        "username": "ops",
        "perm_level": "MasterAdmin",
        "api_access": 1,
        "enabled": 1,
        "recovery_email": "ops@example.org",
        "language": "en",
    }
    assert nms.login("ops").get("/api/v1/accounts/").status_code == 200


@pytest.mark.parametrize(
    "missing",
    ["username", "password", "perm_level", "api_access", "enabled", "recovery_email", "language"],
)
def test_create_requires_every_base_field(nms: Nms, missing: str) -> None:
    body = master_admin()
    del body[missing]
    resp = nms.master().post("/api/v1/accounts/", json=body)
    assert resp.status_code == 400
    assert resp.json()["error"] and resp.json()["message"]


@pytest.mark.parametrize(
    "password", ["Short1Aa", "alllowercase123", "ALLUPPERCASE123", "NoDigitsInThisOne"]
)
def test_password_policy_on_plaintext(nms: Nms, password: str) -> None:
    resp = nms.master().post("/api/v1/accounts/", json=master_admin(password=password))
    assert resp.status_code == 400
    assert "password" in resp.json()["message"]


def test_policy_minimum_is_exactly_12(nms: Nms) -> None:
    resp = nms.master().post("/api/v1/accounts/", json=master_admin(password="Abcdefghij12"))
    assert resp.status_code == 200


def test_sha512_crypt_hash_is_accepted_as_is(nms: Nms) -> None:
    hashed = "{SHA512-CRYPT}" + sha512_crypt.using(rounds=5000).hash("weak")
    master = nms.master()
    assert master.post("/api/v1/accounts/", json=master_admin(password=hashed)).status_code == 200
    assert master.get("/api/v1/accounts/ops/").json()["password_hash"] == hashed
    nms.login("ops", "weak")


@pytest.mark.parametrize("bad", ["{SHA512-CRYPT}$1$abc$def", "{MD5}abc", "$6$salt$hash"])
def test_other_hash_forms_are_refused(nms: Nms, bad: str) -> None:
    assert (
        nms.master().post("/api/v1/accounts/", json=master_admin(password=bad)).status_code == 400
    )


def test_plaintext_is_stored_as_sha512_crypt(nms: Nms) -> None:
    master = nms.master()
    master.post("/api/v1/accounts/", json=master_admin())
    stored = master.get("/api/v1/accounts/ops/").json()["password_hash"]
    assert stored.startswith("{SHA512-CRYPT}$6$")
    assert sha512_crypt.verify(PASSWORD, stored.removeprefix("{SHA512-CRYPT}"))


def test_duplicate_username_is_refused(nms: Nms) -> None:
    master = nms.master()
    assert master.post("/api/v1/accounts/", json=master_admin()).status_code == 200
    resp = master.post("/api/v1/accounts/", json=master_admin())
    assert resp.status_code == 409
    assert resp.json()["error"]


@pytest.mark.parametrize("perm", ["Admin", "masteradmin", ""])
def test_unknown_perm_level_is_refused(nms: Nms, perm: str) -> None:
    assert (
        nms.master().post("/api/v1/accounts/", json=master_admin(perm_level=perm)).status_code
        == 400
    )


@pytest.mark.parametrize("language", ["english", "E", "EN", 1])
def test_language_must_be_iso_code(nms: Nms, language: object) -> None:
    resp = nms.master().post("/api/v1/accounts/", json=master_admin(language=language))
    assert resp.status_code == 400


def test_create_domain_admin_with_quotas(world: Nms) -> None:
    master = world.master()
    resp = master.post("/api/v1/accounts/", json=domain_admin(domains="free.example"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["domains"] == "free.example"
    assert body["quota_mailboxes"] == 5 and body["storagequota_total"] == 2048
    assert "password" not in body and "password_hash" not in body


@pytest.mark.parametrize(
    "missing",
    [
        "domains",
        "quota_domains",
        "quota_domainaliases",
        "quota_aliases",
        "quota_mailboxes",
        "storagequota_total",
    ],
)
def test_domain_admin_requires_every_quota_field(nms: Nms, missing: str) -> None:
    body = domain_admin()
    del body[missing]
    assert nms.master().post("/api/v1/accounts/", json=body).status_code == 400


def test_domain_admin_domains_must_exist(nms: Nms) -> None:
    resp = nms.master().post("/api/v1/accounts/", json=domain_admin(domains="nowhere.example"))
    assert resp.status_code == 400


@pytest.mark.parametrize("value", [-1, 1.5, "10", True])
def test_quotas_are_ints_ge_0(nms: Nms, value: object) -> None:
    resp = nms.master().post("/api/v1/accounts/", json=domain_admin(quota_mailboxes=value))
    assert resp.status_code == 400


def test_master_creates_mail_user(world: Nms) -> None:
    resp = world.master().post("/api/v1/accounts/", json=mail_user())
    assert resp.status_code == 200
    assert resp.json()["domain"] == "alpha.example"
    assert resp.json()["storagequota_total"] == 100
    assert resp.json()["storagequota_used"] == 0


def test_mail_user_domain_must_match_username(world: Nms) -> None:
    resp = world.master().post("/api/v1/accounts/", json=mail_user(domain="beta.example"))
    assert resp.status_code == 400


def test_mail_user_domain_must_exist(world: Nms) -> None:
    body = mail_user(username="x@ghost.example", domain="ghost.example")
    assert world.master().post("/api/v1/accounts/", json=body).status_code == 400


def test_domain_admin_creates_mail_user_in_own_domain_and_is_charged(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    assert reseller.post("/api/v1/accounts/", json=mail_user()).status_code == 200
    me = reseller.get("/api/v1/accounts/reseller-a/").json()
    assert me["quota_mailboxes_used"] == 2
    assert me["storagequota_used"] == 600


def test_domain_admin_cannot_create_in_another_domain(world: Nms) -> None:
    body = mail_user(username="carl@beta.example", domain="beta.example")
    resp = world.as_user("reseller-a").post("/api/v1/accounts/", json=body)
    assert resp.status_code == 403
    assert resp.json()["error"]


@pytest.mark.parametrize("body", [master_admin(), domain_admin()])
def test_domain_admin_cannot_create_admins(world: Nms, body: dict[str, Any]) -> None:
    assert world.as_user("reseller-a").post("/api/v1/accounts/", json=body).status_code == 403


def test_mail_user_cannot_create_accounts(world: Nms) -> None:
    resp = world.as_user("ann@alpha.example").post("/api/v1/accounts/", json=mail_user())
    assert resp.status_code == 403


# ----- list and get --------------------------------------------------------------------------


def test_master_sees_everyone_including_itself(world: Nms) -> None:
    names = {a["username"] for a in world.master().get("/api/v1/accounts/").json()["accounts"]}
    assert names == {"admin", "reseller-a", "reseller-b", "ann@alpha.example", "bob@beta.example"}


def test_domain_admin_sees_itself_and_its_mail_users(world: Nms) -> None:
    accounts = world.as_user("reseller-a").get("/api/v1/accounts/").json()["accounts"]
    assert {a["username"] for a in accounts} == {"reseller-a", "ann@alpha.example"}


def test_mail_user_sees_only_itself(world: Nms) -> None:
    accounts = world.as_user("ann@alpha.example").get("/api/v1/accounts/").json()["accounts"]
    assert [a["username"] for a in accounts] == ["ann@alpha.example"]


def test_domain_admin_fields_in_list(world: Nms) -> None:
    accounts = world.master().get("/api/v1/accounts/?perm_level=DomainAdmin").json()["accounts"]
    row = next(a for a in accounts if a["username"] == "reseller-a")
    assert DA_KEYS <= set(row)
    assert row["domains"] == "alpha.example"
    assert (row["quota_domains_used"], row["quota_mailboxes_used"]) == (1, 1)
    assert row["storagequota_used"] == 500


def test_get_single_account(world: Nms) -> None:
    resp = world.master().get("/api/v1/accounts/reseller-b/")
    assert resp.status_code == 200
    assert DA_KEYS <= set(resp.json())


def test_get_unknown_account_is_404(world: Nms) -> None:
    resp = world.master().get("/api/v1/accounts/ghost/")
    assert resp.status_code == 404
    assert set(resp.json()) >= {"error", "message"}


def test_domain_admin_cannot_read_another_customers_account(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    assert reseller.get("/api/v1/accounts/bob@beta.example/").status_code == 403
    assert reseller.get("/api/v1/accounts/reseller-b/").status_code == 403


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("perm_level=MailUser", {"ann@alpha.example", "bob@beta.example"}),
        ("perm_level=MasterAdmin", {"admin"}),
        ("enabled=0", {"bob@beta.example"}),
        ("api_access=0", {"reseller-b"}),
    ],
)
def test_list_filters(world: Nms, query: str, expected: set[str]) -> None:
    master = world.master()
    master.patch("/api/v1/accounts/bob@beta.example/", json={"enabled": 0})
    master.patch("/api/v1/accounts/reseller-b/", json={"api_access": 0})
    accounts = master.get(f"/api/v1/accounts/?{query}").json()["accounts"]
    assert {a["username"] for a in accounts} == expected


@pytest.mark.parametrize("query", ["perm_level=Admin", "enabled=yes", "api_access=2"])
def test_bad_filters_are_refused(world: Nms, query: str) -> None:
    assert world.master().get(f"/api/v1/accounts/?{query}").status_code == 400


def test_mail_users_listed_with_enabled_and_domain(world: Nms) -> None:
    resp = world.master().get("/api/v1/accounts/?perm_level=MailUser&search=alpha.example")
    (row,) = resp.json()["accounts"]
    assert row["username"] == "ann@alpha.example"
    assert (row["enabled"], row["domain"]) == (1, "alpha.example")
    assert (row["storagequota_total"], row["storagequota_used"]) == (500, 403)


# ----- update -------------------------------------------------------------------------------


def test_patch_echoes_updated_fields(world: Nms) -> None:
    resp = world.master().patch("/api/v1/accounts/reseller-a/", json={"quota_mailboxes": 10})
    assert resp.status_code == 200
    assert resp.json() == {"quota_mailboxes": 10}
    assert world.account("reseller-a")["quota_mailboxes"] == 10


def test_patch_needs_at_least_one_field(world: Nms) -> None:
    assert world.master().patch("/api/v1/accounts/reseller-a/", json={}).status_code == 400


def test_patch_domains_and_quotas(world: Nms) -> None:
    body = {
        "domains": "alpha.example,free.example",
        "quota_domains": 5,
        "quota_aliases": 7,
        "quota_domainaliases": 3,
        "storagequota_total": 4000,
    }
    resp = world.master().patch("/api/v1/accounts/reseller-a/", json=body)
    assert resp.status_code == 200
    assert resp.json()["domains"] == "alpha.example, free.example"
    account = world.account("reseller-a")
    assert (account["quota_aliases"], account["storagequota_total"]) == (7, 4000)


def test_patch_password_changes_login(world: Nms) -> None:
    master = world.master()
    resp = master.patch("/api/v1/accounts/reseller-a/", json={"password": "N3w-Password-x"})
    assert resp.status_code == 200
    assert "N3w-Password-x" not in resp.text
    world.login("reseller-a", "N3w-Password-x")
    bad = world.anon.post("/api/v1/auth/", json={"username": "reseller-a", "password": PASSWORD})
    assert bad.status_code == 401


def test_patch_password_policy(world: Nms) -> None:
    resp = world.master().patch("/api/v1/accounts/reseller-a/", json={"password": "weak"})
    assert resp.status_code == 400


def test_patch_recovery_email(world: Nms) -> None:
    master = world.master()
    resp = master.patch("/api/v1/accounts/reseller-a/", json={"recovery_email": "new@x.org"})
    assert resp.json() == {"recovery_email": "new@x.org"}
    assert master.get("/api/v1/accounts/reseller-a/").json()["recovery_email"] == "new@x.org"


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("password", "Another-Passw0rd", 200),
        ("language", "de", 200),
        ("recovery_email", "me@x.org", 200),
        ("quota_mailboxes", 99, 403),
        ("enabled", 0, 403),
        ("domains", "beta.example", 403),
    ],
)
def test_domain_admin_patching_itself(world: Nms, field: str, value: object, status: int) -> None:
    resp = world.as_user("reseller-a").patch("/api/v1/accounts/reseller-a/", json={field: value})
    assert resp.status_code == status


def test_domain_admin_patches_its_mail_user(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    resp = reseller.patch("/api/v1/accounts/ann@alpha.example/", json={"enabled": 0})
    assert resp.status_code == 200
    assert world.account("ann@alpha.example")["enabled"] == 0
    assert reseller.patch("/api/v1/accounts/ann@alpha.example/", json={"enabled": 1}).ok


def test_domain_admin_cannot_patch_another_customers_mail_user(world: Nms) -> None:
    resp = world.as_user("reseller-a").patch(
        "/api/v1/accounts/bob@beta.example/", json={"enabled": 0}
    )
    assert resp.status_code == 403
    assert world.account("bob@beta.example")["enabled"] == 1


def test_mail_user_cannot_disable_itself(world: Nms) -> None:
    ann = world.as_user("ann@alpha.example")
    assert ann.patch("/api/v1/accounts/ann@alpha.example/", json={"enabled": 0}).status_code == 403
    assert ann.patch("/api/v1/accounts/ann@alpha.example/", json={"language": "fr"}).ok


@pytest.mark.parametrize(
    ("target", "field"),
    [("admin", "quota_mailboxes"), ("ann@alpha.example", "domains"), ("reseller-a", "domain")],
)
def test_fields_of_other_levels_are_refused(world: Nms, target: str, field: str) -> None:
    resp = world.master().patch(f"/api/v1/accounts/{target}/", json={field: "x"})
    assert resp.status_code == 400


def test_patch_unknown_account_is_404(world: Nms) -> None:
    assert world.master().patch("/api/v1/accounts/ghost/", json={"enabled": 0}).status_code == 404


# ----- delete -------------------------------------------------------------------------------


def test_delete_mail_user_releases_quota(world: Nms) -> None:
    resp = world.master().delete("/api/v1/accounts/ann@alpha.example/")
    assert resp.status_code == 204 and resp.content == b""
    account = world.account("reseller-a")
    assert (account["quota_mailboxes_used"], account["storagequota_used"]) == (0, 0)


def test_domain_admin_deletes_its_mail_user_but_not_others(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    assert reseller.delete("/api/v1/accounts/bob@beta.example/").status_code == 403
    assert reseller.delete("/api/v1/accounts/ann@alpha.example/").status_code == 204


def test_delete_domain_admin_with_domains_is_refused(world: Nms) -> None:
    resp = world.master().delete("/api/v1/accounts/reseller-a/")
    assert resp.status_code == 409
    assert "cascade" in resp.json()["message"]


def test_delete_domain_admin_without_domains(world: Nms) -> None:
    master = world.master()
    master.patch("/api/v1/accounts/reseller-a/", json={"domains": ""})
    assert master.delete("/api/v1/accounts/reseller-a/").status_code == 204
    assert master.get("/api/v1/accounts/reseller-a/").status_code == 404


def test_delete_unknown_account_is_404(world: Nms) -> None:
    assert world.master().delete("/api/v1/accounts/ghost/").status_code == 404


def test_deleted_accounts_token_stops_working(world: Nms) -> None:
    ann = world.as_user("ann@alpha.example")
    world.master().delete("/api/v1/accounts/ann@alpha.example/")
    assert ann.get("/api/v1/accounts/").status_code == 401
