"""Aliases and sender addresses; both count against quota_aliases.

nmsim/README.md: "Aliases and sender addresses", "Quota accounting".
"""

from __future__ import annotations

import pytest

from tests.nmsim.conftest import Nms


def alias(name: str = "info@alpha.example", recipients: str = "x@out.example") -> dict[str, str]:
    return {"alias": name, "recipients": recipients}


def sender(
    name: str = "sales@alpha.example", usernames: str = "ann@alpha.example"
) -> dict[str, str]:
    return {"sender_address": name, "usernames": usernames}


def test_create_and_list_aliases(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    resp = reseller.post("/api/v1/aliases/", json=alias(recipients="a@x.example, b@y.example"))
    assert resp.status_code == 200
    assert resp.json() == {"alias": "info@alpha.example", "recipients": "a@x.example, b@y.example"}
    listing = reseller.get("/api/v1/aliases/").json()
    assert listing == {"aliases": [resp.json()]}
    assert world.account("reseller-a")["quota_aliases_used"] == 1


def test_alias_list_is_scoped_searchable_and_paged(world: Nms) -> None:
    world.master().post("/api/v1/aliases/", json=alias("team@beta.example"))
    reseller = world.as_user("reseller-a")
    reseller.post("/api/v1/aliases/", json=alias("one@alpha.example"))
    reseller.post("/api/v1/aliases/", json=alias("two@alpha.example"))
    assert len(reseller.get("/api/v1/aliases/").json()["aliases"]) == 2
    found = reseller.get("/api/v1/aliases/?search=TWO").json()["aliases"]
    assert [a["alias"] for a in found] == ["two@alpha.example"]
    page = reseller.get("/api/v1/aliases/?limit=1&start=1").json()["aliases"]
    assert [a["alias"] for a in page] == ["two@alpha.example"]


def test_put_alias_replaces_recipients(world: Nms) -> None:
    master = world.master()
    master.post("/api/v1/aliases/", json=alias())
    resp = master.put("/api/v1/aliases/", json=alias(recipients="new@z.example"))
    assert resp.status_code == 200
    assert resp.json()["recipients"] == "new@z.example"
    assert master.get("/api/v1/aliases/").json()["aliases"][0]["recipients"] == "new@z.example"


def test_put_unknown_alias_is_404(world: Nms) -> None:
    assert world.master().put("/api/v1/aliases/", json=alias()).status_code == 404


def test_delete_alias_releases_quota(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    reseller.post("/api/v1/aliases/", json=alias())
    resp = reseller.delete("/api/v1/aliases/", json={"alias": "info@alpha.example"})
    assert resp.status_code == 204 and resp.content == b""
    assert world.account("reseller-a")["quota_aliases_used"] == 0


@pytest.mark.parametrize(
    "body",
    [
        alias(name="not-an-address"),
        alias(recipients=""),
        alias(recipients="nope"),
        {"alias": "info@alpha.example"},
        {**alias(), "extra": 1},
    ],
)
def test_alias_validation(world: Nms, body: dict[str, object]) -> None:
    assert world.master().post("/api/v1/aliases/", json=body).status_code == 400


def test_alias_domain_must_be_administered(world: Nms) -> None:
    resp = world.as_user("reseller-a").post("/api/v1/aliases/", json=alias("x@beta.example"))
    assert resp.status_code == 403


def test_duplicate_alias_or_mailbox_address_is_refused(world: Nms) -> None:
    master = world.master()
    master.post("/api/v1/aliases/", json=alias())
    assert master.post("/api/v1/aliases/", json=alias()).status_code == 409
    assert master.post("/api/v1/aliases/", json=alias("ann@alpha.example")).status_code == 409


def test_sender_address_create_and_list(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    resp = reseller.post("/api/v1/sender_addresses/", json=sender())
    assert resp.status_code == 200
    assert resp.json() == sender()
    listing = reseller.get("/api/v1/sender_addresses/").json()
    assert listing == {"sender_addresses": [sender()]}
    assert world.account("reseller-a")["quota_aliases_used"] == 1


def test_put_sender_address_replaces_usernames(world: Nms) -> None:
    world.seed({"accounts": [{"username": "cat@alpha.example", "perm_level": "MailUser"}]})
    reseller = world.as_user("reseller-a")
    reseller.post("/api/v1/sender_addresses/", json=sender())
    resp = reseller.put("/api/v1/sender_addresses/", json=sender(usernames="cat@alpha.example"))
    assert resp.status_code == 200
    assert resp.json() == sender(usernames="cat@alpha.example")


def test_sender_usernames_must_be_callers_mail_users(world: Nms) -> None:
    reseller = world.as_user("reseller-a")
    unknown = sender(usernames="ghost@alpha.example")
    assert reseller.post("/api/v1/sender_addresses/", json=unknown).status_code == 400
    foreign = sender(usernames="bob@beta.example")
    assert reseller.post("/api/v1/sender_addresses/", json=foreign).status_code == 403


def test_delete_sender_address(world: Nms) -> None:
    master = world.master()
    master.post("/api/v1/sender_addresses/", json=sender())
    resp = master.delete(
        "/api/v1/sender_addresses/", json={"sender_address": "sales@alpha.example"}
    )
    assert resp.status_code == 204
    assert master.get("/api/v1/sender_addresses/").json() == {"sender_addresses": []}


def test_aliases_and_sender_addresses_share_quota_aliases(world: Nms) -> None:
    reseller = world.as_user("reseller-a")  # quota_aliases 3
    assert reseller.post("/api/v1/aliases/", json=alias("one@alpha.example")).ok
    assert reseller.post("/api/v1/aliases/", json=alias("two@alpha.example")).ok
    assert reseller.post("/api/v1/sender_addresses/", json=sender()).ok
    resp = reseller.post("/api/v1/aliases/", json=alias("four@alpha.example"))
    assert resp.status_code == 409
    assert "quota_aliases" in resp.json()["message"]
    resp = reseller.post("/api/v1/sender_addresses/", json=sender("more@alpha.example"))
    assert resp.status_code == 409


def test_mail_user_cannot_use_forwarder_routes(world: Nms) -> None:
    ann = world.as_user("ann@alpha.example")
    assert ann.get("/api/v1/aliases/").status_code == 403
    assert ann.post("/api/v1/sender_addresses/", json=sender()).status_code == 403
