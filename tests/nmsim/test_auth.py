"""Authentication: login, Basic token auth, expiry, 2FA ("Login and tokens" in nmsim/README.md)."""

from __future__ import annotations

import re

import pytest

from tests.nmsim.conftest import MASTER, PASSWORD, Nms


def test_login_returns_documented_auth_object(nms: Nms) -> None:
    resp = nms.anon.post("/api/v1/auth/", json={"username": MASTER[0], "password": MASTER[1]})
    assert resp.status_code == 200
    auth = resp.json()["auth"]
    assert set(auth) == {
        "username",
        "status",
        "message",
        "auth_token",
        "perm_level",
        "valid_from",
        "valid_to",
    }
    assert auth["status"] == "success"
    assert auth["username"] == "admin"
    assert auth["perm_level"] == "MasterAdmin"
    assert re.fullmatch(r"[A-Za-z0-9]{40}", auth["auth_token"])
    assert auth["valid_to"] - auth["valid_from"] == 86400


def test_token_works_as_basic_password(nms: Nms) -> None:
    master = nms.master()
    assert master.get("/api/v1/accounts/").status_code == 200


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "Wrong-Passw0rd1"), ("nobody", "Sim-Master-Passw0rd")],
)
def test_bad_credentials_give_401_with_both_error_shapes(
    nms: Nms, username: str, password: str
) -> None:
    resp = nms.anon.post("/api/v1/auth/", json={"username": username, "password": password})
    assert resp.status_code == 401
    body = resp.json()
    assert body["auth"]["status"] != "success"
    assert body["auth"]["message"]
    assert body["error"] and body["message"]
    assert "auth_token" not in body["auth"]


@pytest.mark.parametrize("flag", ["enabled", "api_access"])
def test_disabled_account_or_no_api_access_cannot_log_in(world: Nms, flag: str) -> None:
    world.master().patch("/api/v1/accounts/reseller-a/", json={flag: 0})
    resp = world.anon.post("/api/v1/auth/", json={"username": "reseller-a", "password": PASSWORD})
    assert resp.status_code == 401


def test_login_as_domainadmin_reports_its_level(world: Nms) -> None:
    resp = world.anon.post("/api/v1/auth/", json={"username": "reseller-a", "password": PASSWORD})
    assert resp.json()["auth"]["perm_level"] == "DomainAdmin"


def test_missing_authorization_is_401(nms: Nms) -> None:
    resp = nms.anon.get("/api/v1/accounts/")
    assert resp.status_code == 401
    assert resp.json()["message"]


def test_unknown_token_is_401(nms: Nms) -> None:
    resp = nms.as_token("admin", "x" * 40).get("/api/v1/accounts/")
    assert resp.status_code == 401
    assert set(resp.json()) >= {"error", "message"}


def test_token_of_another_user_is_401(world: Nms) -> None:
    token = world.master().auth[1]  # type: ignore[index]
    resp = world.as_token("reseller-a", token).get("/api/v1/accounts/")
    assert resp.status_code == 401


def test_token_expires_after_24_hours_of_sim_time(nms: Nms) -> None:
    master = nms.master()
    nms.ctl.post("/_sim/clock", json={"advance": 86399})
    assert master.get("/api/v1/accounts/").status_code == 200
    nms.ctl.post("/_sim/clock", json={"advance": 2})
    assert master.get("/api/v1/accounts/").status_code == 401


def test_token_ttl_is_configurable(nms: Nms) -> None:
    nms.config(token_ttl=60)
    master = nms.master()
    nms.ctl.post("/_sim/clock", json={"advance": 61})
    assert master.get("/api/v1/accounts/").status_code == 401


def test_new_login_does_not_revoke_older_tokens(nms: Nms) -> None:
    first = nms.master()
    nms.master()
    assert first.get("/api/v1/accounts/").status_code == 200


def test_disabling_an_account_stops_its_tokens(world: Nms) -> None:
    reseller = world.login("reseller-a")
    world.master().patch("/api/v1/accounts/reseller-a/", json={"enabled": 0})
    assert reseller.get("/api/v1/accounts/").status_code == 401


def test_otp_required_when_account_has_2fa(nms: Nms) -> None:
    nms.seed(
        {
            "accounts": [
                {
                    "username": "secure",
                    "perm_level": "MasterAdmin",
                    "password": PASSWORD,
                    "otp": "123456",
                }
            ]
        }
    )
    creds = {"username": "secure", "password": PASSWORD}
    assert nms.anon.post("/api/v1/auth/", json=creds).status_code == 401
    assert nms.anon.post("/api/v1/auth/", json={**creds, "otp": "000000"}).status_code == 401
    assert nms.anon.post("/api/v1/auth/", json={**creds, "otp": "123456"}).status_code == 200


def test_login_records_last_login(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True, "set": 1_800_000_000})
    master = nms.master()
    assert master.get("/api/v1/accounts/admin/").json()["last_login"] == 1_800_000_000


def test_login_body_must_have_strings(nms: Nms) -> None:
    assert nms.anon.post("/api/v1/auth/", json={"username": "admin"}).status_code == 400
