"""Domains, relay domains and domain aliases.

nmsim/README.md: "Domain verification", "Verified list elements",
"One namespace for zone names", "Administered domains", "Domain delete".
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.nmsim.conftest import Nms

CODE = re.compile(r"nms-domain-verification=\d{12}")
RELAY = {
    "relay_domain": "relay.example",
    "destination_hostname": "mx.example.net",
    "destination_port": 25,
}


def test_create_domain_is_pending_verification(world: Nms) -> None:
    world.ctl.post("/_sim/clock", json={"freeze": True, "set": 1_800_000_000})
    resp = world.master().post("/api/v1/domains/", json={"domain": "new.example"})
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {
        "domain",
        "expire_time",
        "status",
        "verification_code",
        "verification_type",
    }
    assert body["status"] == "pending_verification"
    assert body["verification_type"] == "DNS TXT"
    assert CODE.fullmatch(body["verification_code"])
    assert body["expire_time"] > 1_800_000_000


def test_domain_list_pending_then_verified(world: Nms) -> None:
    master = world.master()
    code = master.post("/api/v1/domains/", json={"domain": "new.example"}).json()
    listing = master.get("/api/v1/domains/").json()
    assert set(listing) == {"domains", "domains_pending_verification"}
    assert "new.example" not in listing["domains"]
    (pending,) = listing["domains_pending_verification"]
    assert pending == {
        "domain": "new.example",
        "expire_time": code["expire_time"],
        "verification_code": code["verification_code"],
    }
    assert world.ctl.post("/_sim/verify", json={"domain": "new.example"}).ok
    listing = master.get("/api/v1/domains/").json()
    assert "new.example" in listing["domains"]
    assert listing["domains_pending_verification"] == []


def test_domain_admin_sees_only_its_domains(world: Nms) -> None:
    listing = world.as_user("reseller-a").get("/api/v1/domains/").json()
    assert listing == {"domains": ["alpha.example"], "domains_pending_verification": []}


def test_domain_admin_create_adds_to_its_domains_and_charges_quota(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    assert reseller.post("/api/v1/domains/", json={"domain": "mine.example"}).status_code == 200
    account = world.account("reseller-a")
    assert account["domains"] == "alpha.example, mine.example"
    assert account["quota_domains_used"] == 2


def test_domain_quota_counts_domains_and_relay_domains(world: Nms) -> None:
    reseller = world.as_user("reseller-a")  # quota_domains 3, one used
    assert reseller.post("/api/v1/domains/", json={"domain": "two.example"}).ok
    assert reseller.post("/api/v1/relaydomains/", json=RELAY).ok
    assert world.account("reseller-a")["quota_domains_used"] == 3
    resp = reseller.post("/api/v1/domains/", json={"domain": "four.example"})
    assert resp.status_code == 409
    assert resp.json()["error"] == "quota_exceeded"
    assert "quota_domains" in resp.json()["message"]
    assert "four.example" not in world.account("reseller-a")["domains"]


def test_pending_domains_count_unless_switched_off(world: Nms) -> None:
    world.config(count_pending=False)
    reseller = world.as_user("reseller-a")
    reseller.post("/api/v1/domains/", json={"domain": "two.example"})
    assert world.account("reseller-a")["quota_domains_used"] == 1
    world.ctl.post("/_sim/verify", json={})
    assert world.account("reseller-a")["quota_domains_used"] == 2


@pytest.mark.parametrize("name", ["Upper.Example", "nodot", "-bad.example", "a..b", 42, ""])
def test_domain_name_is_validated(world: Nms, name: object) -> None:
    assert world.master().post("/api/v1/domains/", json={"domain": name}).status_code == 400


def test_domain_names_are_unique_across_kinds(world: Nms) -> None:
    master = world.master()
    assert master.post("/api/v1/domains/", json={"domain": "alpha.example"}).status_code == 409
    assert (
        master.post(
            "/api/v1/relaydomains/", json={**RELAY, "relay_domain": "beta.example"}
        ).status_code
        == 409
    )


def test_mail_user_cannot_use_domain_routes(world: Nms) -> None:
    ann = world.as_user("ann@alpha.example")
    assert ann.get("/api/v1/domains/").status_code == 403
    assert ann.post("/api/v1/domains/", json={"domain": "x.example"}).status_code == 403


def test_delete_domain(world: Nms) -> None:
    master = world.master()
    resp = master.delete("/api/v1/domains/", json={"domain": "free.example"})
    assert resp.status_code == 204 and resp.content == b""
    assert "free.example" not in master.get("/api/v1/domains/").json()["domains"]


def test_delete_domain_with_mailboxes_is_refused(world: Nms) -> None:
    resp = world.master().delete("/api/v1/domains/", json={"domain": "alpha.example"})
    assert resp.status_code == 409


def test_delete_unknown_domain_is_404(world: Nms) -> None:
    assert (
        world.master().delete("/api/v1/domains/", json={"domain": "x.example"}).status_code == 404
    )


def test_domain_admin_cannot_delete_another_customers_domain(world: Nms) -> None:
    resp = world.as_user("reseller-a").delete("/api/v1/domains/", json={"domain": "beta.example"})
    assert resp.status_code == 403


def test_deleting_own_domain_releases_quota_and_leaves_domains_list(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    reseller.post("/api/v1/domains/", json={"domain": "two.example"})
    assert reseller.delete("/api/v1/domains/", json={"domain": "two.example"}).status_code == 204
    account = world.account("reseller-a")
    assert (account["domains"], account["quota_domains_used"]) == ("alpha.example", 1)


# ----- relay domains -------------------------------------------------------------------------


def test_create_relay_domain(world: Nms) -> None:
    resp = world.master().post("/api/v1/relaydomains/", json=RELAY)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "pending_verification" and body["verification_type"] == "DNS TXT"
    assert (body["destination_hostname"], body["destination_port"]) == ("mx.example.net", 25)
    assert CODE.fullmatch(body["verification_code"])


@pytest.mark.parametrize(
    "change", [{"destination_port": "25"}, {"destination_port": 0}, {"destination_hostname": ""}]
)
def test_relay_domain_fields_are_validated(world: Nms, change: dict[str, Any]) -> None:
    assert world.master().post("/api/v1/relaydomains/", json={**RELAY, **change}).status_code == 400


def test_relay_domain_list(world: Nms) -> None:
    master = world.master()
    master.post("/api/v1/relaydomains/", json=RELAY)
    listing = master.get("/api/v1/relaydomains/").json()
    (pending,) = listing["relay_domains_pending_verification"]
    assert set(pending) == {
        "destination_hostname",
        "destination_port",
        "expire_time",
        "relay_domain",
        "verification_code",
    }
    world.ctl.post("/_sim/verify", json={"domain": "relay.example"})
    listing = master.get("/api/v1/relaydomains/").json()
    assert listing["relay_domains_pending_verification"] == []
    assert listing["relay_domains"][0]["relay_domain"] == "relay.example"


@pytest.mark.parametrize("verified", [False, True])
def test_delete_relay_domain_pending_or_verified(world: Nms, verified: bool) -> None:
    reseller = world.as_user("reseller-a")
    reseller.post("/api/v1/relaydomains/", json=RELAY)
    if verified:
        world.ctl.post("/_sim/verify", json={"domain": "relay.example"})
    resp = reseller.delete("/api/v1/relaydomains/", json={"relay_domain": "relay.example"})
    assert resp.status_code == 204
    assert world.account("reseller-a")["quota_domains_used"] == 1


def test_delete_relay_domain_requires_body_key(world: Nms) -> None:
    assert world.master().delete("/api/v1/relaydomains/", json={}).status_code == 400


# ----- domain aliases ------------------------------------------------------------------------


def test_create_domain_alias(world: Nms) -> None:
    body = {"domain_alias": "alias.example", "rcpt_domain": "alpha.example"}
    resp = world.as_user("reseller-a").post("/api/v1/domainaliases/", json=body)
    assert resp.status_code == 200
    assert resp.json()["status"] == "pending_verification"
    assert resp.json()["rcpt_domain"] == "alpha.example"
    assert world.account("reseller-a")["quota_domainaliases_used"] == 1


def test_domain_alias_list(world: Nms) -> None:
    master = world.master()
    master.post(
        "/api/v1/domainaliases/",
        json={"domain_alias": "alias.example", "rcpt_domain": "alpha.example"},
    )
    listing = master.get("/api/v1/domainaliases/").json()
    (pending,) = listing["domain_aliases_pending_verification"]
    assert set(pending) == {"domain_alias", "expire_time", "rcpt_domain", "verification_code"}
    world.ctl.post("/_sim/verify", json={"domain": "alias.example"})
    listing = master.get("/api/v1/domainaliases/").json()
    assert listing["domain_aliases"] == [
        {"domain_alias": "alias.example", "rcpt_domain": "alpha.example"}
    ]


def test_domain_alias_quota(world: Nms) -> None:
    reseller = world.as_user("reseller-a")  # quota_domainaliases 2
    for name in ("one.example", "two.example"):
        assert reseller.post(
            "/api/v1/domainaliases/", json={"domain_alias": name, "rcpt_domain": "alpha.example"}
        ).ok
    resp = reseller.post(
        "/api/v1/domainaliases/",
        json={"domain_alias": "three.example", "rcpt_domain": "alpha.example"},
    )
    assert resp.status_code == 409
    assert "quota_domainaliases" in resp.json()["message"]


def test_domain_alias_target_must_be_callers_existing_domain(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    ghost = {"domain_alias": "x.example", "rcpt_domain": "ghost.example"}
    assert reseller.post("/api/v1/domainaliases/", json=ghost).status_code == 400
    other = {"domain_alias": "x.example", "rcpt_domain": "beta.example"}
    assert reseller.post("/api/v1/domainaliases/", json=other).status_code == 403


def test_delete_domain_alias(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    reseller.post(
        "/api/v1/domainaliases/",
        json={"domain_alias": "alias.example", "rcpt_domain": "alpha.example"},
    )
    resp = reseller.delete("/api/v1/domainaliases/", json={"domain_alias": "alias.example"})
    assert resp.status_code == 204
    assert world.account("reseller-a")["quota_domainaliases_used"] == 0
