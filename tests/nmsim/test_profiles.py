"""Profiles ("Profiles" in nmsim/README.md): each changes only its own silent-doc behaviour.

Every test talks to a real simulator over HTTP. The matrix test observes every behaviour under
every profile and expects the documented answer everywhere except where the profile differs.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any

import pytest
import requests

from nmsim.config import SimConfig
from nmsim.profiles import DESCRIPTIONS, PROFILES
from nmsim.server import start
from tests.nmsim.conftest import PASSWORD, Client, Nms

NAMES = [
    "documented",
    "empty-404",
    "empty-204",
    "single-token",
    "no-cascade",
    "zero-unlimited",
    "lowercase",
    "ban-403",
    "no-usage",
]


def domain_admin(username: str, **fields: Any) -> dict[str, Any]:
    """A DomainAdmin create body with empty domains and zero quotas unless given."""
    body: dict[str, Any] = {
        "username": username,
        "password": PASSWORD,
        "perm_level": "DomainAdmin",
        "api_access": 1,
        "enabled": 1,
        "recovery_email": "owner@example.com",
        "language": "en",
        "domains": "",
        "quota_domains": 0,
        "quota_domainaliases": 0,
        "quota_aliases": 0,
        "quota_mailboxes": 0,
        "storagequota_total": 0,
    }
    return {**body, **fields}


def answer(resp: requests.Response) -> str:
    """Status plus a short summary of the body."""
    if resp.status_code == 204:
        return f"204 {resp.text!r}"
    body = resp.json()
    return f"{resp.status_code} {body.get('error') or body}"


# ----- one observation per behaviour ------------------------------------------------------------


def empty_search(nms: Nms, master: Client) -> str:
    return answer(master.get("/api/v1/accounts/", params={"search": "nobody-has-this"}))


def far_start(nms: Nms, master: Client) -> str:
    return answer(master.get("/api/v1/accounts/", params={"start": 1000}))


def earlier_token(nms: Nms, master: Client) -> int:
    first = nms.login("reseller-a")
    nms.login("reseller-a")
    return int(first.get("/api/v1/accounts/reseller-a/").status_code)


def cascade_delete(nms: Nms, master: Client) -> str:
    assert master.post("/api/v1/accounts/", json=domain_admin("gone")).status_code == 200
    return answer(master.delete("/api/v1/accounts/cascade/domainadmin/gone/"))


def zero_quota(nms: Nms, master: Client) -> str:
    assert master.post("/api/v1/accounts/", json=domain_admin("zed")).status_code == 200
    zed = nms.as_user("zed")
    resp = zed.post("/api/v1/domains/", json={"domain": "zed.example"})
    created = f"{resp.status_code} {resp.json().get('error', 'created')}"
    return f"{created}, reads {master.get('/api/v1/accounts/zed/').json()['quota_domains']}"


def letter_case(nms: Nms, master: Client) -> str:
    body = domain_admin("casey", recovery_email="Casey.Owner@Example.COM")
    assert master.post("/api/v1/accounts/", json=body).status_code == 200
    email = master.get("/api/v1/accounts/casey/").json()["recovery_email"]
    mixed = master.post("/api/v1/accounts/", json=domain_admin("Mail1001"))
    if mixed.status_code != 200:
        return f"{email}, Mail1001 -> {answer(mixed)}"
    read = master.get("/api/v1/accounts/Mail1001/").json()["username"]
    return f"{email}, Mail1001 -> {read}"


def usage_fields(nms: Nms, master: Client) -> str:
    row = master.get("/api/v1/accounts/reseller-a/").json()
    listed = master.get("/api/v1/accounts/", params={"search": "ann@"}).json()["accounts"][0]
    stats = master.get("/api/v1/stats/quota/").json()[0]
    used = [k for k in (*row, *listed, *stats) if k.endswith("_used")]
    return f"{len(used)} *_used fields"


def ban(nms: Nms, master: Client) -> str:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=1)
    statuses = [nms.anon.get("/api/v1/accounts/").status_code for _ in range(10)]
    assert statuses[1:] == [429] * 9  # plain excess: 429 in every profile
    resp = nms.anon.get("/api/v1/accounts/")
    body = resp.json()
    assert "banned" in body["message"]
    return f"{resp.status_code} {body['error']} Retry-After {resp.headers['Retry-After']}"


OBSERVATIONS = [
    empty_search,
    far_start,
    earlier_token,
    cascade_delete,
    zero_quota,
    letter_case,
    usage_fields,
    ban,  # last: it bans the test client's address
]

DOCUMENTED = {
    "empty_search": "200 {'accounts': []}",
    "far_start": "200 {'accounts': []}",
    "earlier_token": 200,
    "cascade_delete": "204 ''",
    "zero_quota": "409 quota_exceeded, reads 0",
    "letter_case": "Casey.Owner@Example.COM, Mail1001 -> 400 validation_error",
    "usage_fields": "7 *_used fields",
    "ban": "429 ip_banned Retry-After 3600",
}

DIFFERENCES: dict[str, dict[str, Any]] = {
    "documented": {},
    "empty-404": {"empty_search": "404 not_found", "far_start": "404 not_found"},
    "empty-204": {"empty_search": "204 ''", "far_start": "204 ''"},
    "single-token": {"earlier_token": 401},
    "no-cascade": {"cascade_delete": "404 not_found"},
    "zero-unlimited": {"zero_quota": "200 created, reads 0"},
    "lowercase": {"letter_case": "casey.owner@example.com, Mail1001 -> mail1001"},
    "ban-403": {"ban": "403 ip_banned Retry-After 3600"},
    "no-usage": {"usage_fields": "0 *_used fields"},
}


def test_profile_names_are_exported_with_descriptions() -> None:
    assert list(PROFILES) == NAMES
    assert set(DESCRIPTIONS) == set(NAMES)
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    for switches in PROFILES.values():
        assert set(switches) <= set(PROFILES["documented"]) <= fields


def test_documented_is_the_default_configuration() -> None:
    defaults = SimConfig().to_dict()
    assert defaults["profile"] == "documented"
    assert {k: defaults[k] for k in PROFILES["documented"]} == PROFILES["documented"]


@pytest.mark.parametrize("profile", NAMES)
def test_each_profile_changes_only_its_own_behaviour(world: Nms, profile: str) -> None:
    world.config(profile=profile)
    master = world.master()
    observed = {f.__name__: f(world, master) for f in OBSERVATIONS}
    expected = {**DOCUMENTED, **DIFFERENCES[profile]}
    assert observed == expected


def test_no_cascade_answers_like_an_unknown_route(world: Nms) -> None:
    world.config(profile="no-cascade")
    master = world.master()
    gone = master.delete("/api/v1/accounts/cascade/domainadmin/reseller-a/")
    unknown = master.delete("/api/v1/accounts/cascade/nothing/reseller-a/")
    assert (gone.status_code, gone.json()) == (unknown.status_code, unknown.json())
    log = world.ctl.get("/_sim/requests").json()["entries"]
    assert log[-2]["route"] is None


def test_no_cascade_keeps_the_step_by_step_deletes(world: Nms) -> None:
    world.config(profile="no-cascade")
    master = world.master()
    assert master.delete("/api/v1/accounts/ann@alpha.example/").status_code == 204
    assert master.patch("/api/v1/accounts/reseller-a/", json={"domains": ""}).status_code == 200
    assert master.delete("/api/v1/accounts/reseller-a/").status_code == 204
    assert master.delete("/api/v1/domains/", json={"domain": "alpha.example"}).status_code == 204
    assert master.get("/api/v1/accounts/reseller-a/").status_code == 404


def test_zero_unlimited_lowers_a_quota_to_zero_below_usage(world: Nms) -> None:
    master = world.master()
    lowered = {"quota_mailboxes": 0}
    assert master.patch("/api/v1/accounts/reseller-a/", json=lowered).status_code == 409
    world.config(profile="zero-unlimited")
    assert master.patch("/api/v1/accounts/reseller-a/", json=lowered).status_code == 200
    assert master.get("/api/v1/accounts/reseller-a/").json()["quota_mailboxes"] == 0


def test_lowercase_folds_logins_and_patched_emails(world: Nms) -> None:
    world.config(profile="lowercase")
    master = world.master()
    patch = {"recovery_email": "New.Owner@Example.COM"}
    assert master.patch("/api/v1/accounts/reseller-a/", json=patch).json() == {
        "recovery_email": "new.owner@example.com"
    }
    resp = world.anon.post("/api/v1/auth/", json={"username": "Reseller-A", "password": PASSWORD})
    assert resp.json()["auth"]["username"] == "reseller-a"


def test_no_usage_keeps_the_counters_in_the_state_dump(world: Nms) -> None:
    world.config(profile="no-usage")
    assert world.account("reseller-a")["quota_mailboxes_used"] == 1


def test_single_token_also_applies_to_the_token_shortcut(world: Nms) -> None:
    world.config(profile="single-token")
    first = world.as_user("reseller-a")
    second = world.as_user("reseller-a")
    assert first.get("/api/v1/accounts/reseller-a/").status_code == 401
    assert second.get("/api/v1/accounts/reseller-a/").status_code == 200


def test_config_endpoint_takes_profiles_and_switches(nms: Nms) -> None:
    resp = nms.ctl.patch("/_sim/config", json={"profile": "single-token,lowercase"})
    config = resp.json()
    assert (config["profile"], config["single_token"], config["lowercase_names"]) == (
        "single-token,lowercase",
        True,
        True,
    )
    back = nms.ctl.patch("/_sim/config", json={"profile": "documented", "usage_fields": False})
    assert (back.json()["single_token"], back.json()["usage_fields"]) == (False, False)
    for bad in ("nope", "empty-404,empty-204", 7):
        resp = nms.ctl.patch("/_sim/config", json={"profile": bad})
        assert resp.status_code == 400
        assert resp.json()["error"] == "validation_error"
    assert nms.ctl.get("/_sim/config").json()["profile"] == "documented"


def test_start_profile_survives_reset() -> None:
    with start(rate_limit=0, profile="empty-204") as handle:
        requests.patch(f"{handle.url}/_sim/config", json={"profile": "documented"}, timeout=5)
        requests.post(f"{handle.url}/_sim/reset", timeout=5)
        config = requests.get(f"{handle.url}/_sim/config", timeout=5).json()
    assert (config["profile"], config["empty_search_status"]) == ("empty-204", 204)


def test_command_line_lists_and_selects_profiles() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "nmsim", "--list-profiles"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line.split()[0] for line in listed.splitlines()] == NAMES
    bad = subprocess.run(
        [sys.executable, "-m", "nmsim", "--profile", "empty-405"], capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert "known: documented" in bad.stderr
    with subprocess.Popen(
        [sys.executable, "-m", "nmsim", "--port", "0", "--profile", "no-cascade,no-usage"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip().rsplit(" ", 1)[1]
            config = requests.get(f"{url}/_sim/config", timeout=5).json()
        finally:
            proc.terminate()
    assert (config["cascade_delete_route"], config["usage_fields"]) == (False, False)
