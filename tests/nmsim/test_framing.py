"""Transport and framing: paths, bodies, 204s, flags, list fields, pagination.

nmsim/README.md: "Conventions", and the assumptions "Strict trailing slash", "Request bodies",
"Pagination", "Names and letter case".
"""

from __future__ import annotations

import pytest

from tests.nmsim.conftest import Nms

DOCUMENTED = [
    ("POST", "/api/v1/auth/"),
    ("GET", "/api/v1/accounts/"),
    ("GET", "/api/v1/accounts/admin/"),
    ("PATCH", "/api/v1/accounts/cascade/domainadmin/reseller-a/enable/"),
    ("DELETE", "/api/v1/accounts/cascade/domainadmin/reseller-a/"),
    ("POST", "/api/v1/accounts/cascade/ownership/domainadmin/reseller-a/"),
    ("GET", "/api/v1/domains/"),
    ("GET", "/api/v1/domainaliases/"),
    ("GET", "/api/v1/relaydomains/"),
    ("GET", "/api/v1/aliases/"),
    ("GET", "/api/v1/sender_addresses/"),
    ("GET", "/api/v1/stats/quota/"),
    ("GET", "/api/v1/stats/mail/"),
]


@pytest.mark.parametrize(("method", "path"), DOCUMENTED)
def test_path_without_trailing_slash_is_404(world: Nms, method: str, path: str) -> None:
    master = world.master()
    resp = master.request(method, path.rstrip("/"), json={})
    assert resp.status_code == 404
    assert resp.json()["error"]


@pytest.mark.parametrize(("method", "path"), DOCUMENTED[1:])
def test_documented_paths_need_a_token(nms: Nms, method: str, path: str) -> None:
    resp = nms.anon.request(method, path)
    assert resp.status_code == 401
    assert "message" in resp.json()


def test_unknown_path_is_404_json(nms: Nms) -> None:
    resp = nms.master().get("/api/v1/nothing/")
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/json")
    assert set(resp.json()) >= {"error", "message"}


def test_success_is_json(world: Nms) -> None:
    resp = world.master().get("/api/v1/accounts/")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")


def test_204_is_empty_text_html(world: Nms) -> None:
    master = world.master()
    created = master.post(
        "/api/v1/relaydomains/",
        json={
            "relay_domain": "relay.example",
            "destination_hostname": "mx.example.net",
            "destination_port": 25,
        },
    )
    assert created.status_code == 200
    resp = master.delete("/api/v1/relaydomains/", json={"relay_domain": "relay.example"})
    assert resp.status_code == 204
    assert resp.content == b""
    assert resp.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("body", [None, {}, []])
def test_cascade_routes_ignore_bodies(world: Nms, body: object) -> None:
    master = world.master()
    path = "/api/v1/accounts/cascade/domainadmin/reseller-a/disable/"
    resp = master.patch(path) if body is None else master.patch(path, json=body)
    assert resp.status_code == 204


@pytest.mark.parametrize("value", [True, False, "1", 2, None])
def test_flags_must_be_int_0_or_1(world: Nms, value: object) -> None:
    resp = world.master().patch("/api/v1/accounts/ann@alpha.example/", json={"enabled": value})
    assert resp.status_code == 400
    assert resp.json()["error"]


def test_flags_are_ints_in_responses(world: Nms) -> None:
    account = world.master().get("/api/v1/accounts/reseller-a/").json()
    assert account["enabled"] == 1 and account["enabled"] is not True
    assert type(account["api_access"]) is int


def test_comma_lists_are_normalised(world: Nms) -> None:
    master = world.master()
    resp = master.post(
        "/api/v1/aliases/",
        json={"alias": "info@alpha.example", "recipients": "x@one.example,y@two.example ,"},
    )
    assert resp.status_code == 200
    assert resp.json()["recipients"] == "x@one.example, y@two.example"


def test_non_json_body_is_refused(world: Nms) -> None:
    resp = world.master().post("/api/v1/domains/", data="domain=x.example")
    assert resp.status_code in (400, 415)
    assert resp.json()["error"]


def test_pagination_limit_is_capped_at_50(nms: Nms) -> None:
    nms.seed({"domains": [{"domain": "many.example"}]})
    users = [{"username": f"u{i:03d}@many.example", "perm_level": "MailUser"} for i in range(60)]
    nms.seed({"accounts": users})
    master = nms.master()
    assert len(master.get("/api/v1/accounts/?limit=100").json()["accounts"]) == 50
    assert len(master.get("/api/v1/accounts/").json()["accounts"]) == 50
    page = master.get("/api/v1/accounts/?perm_level=MailUser&limit=10&start=55").json()
    assert [a["username"] for a in page["accounts"]] == [
        f"u{i:03d}@many.example" for i in range(55, 60)
    ]
    assert master.get("/api/v1/accounts/?start=1000").json() == {"accounts": []}


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "start=-1"])
def test_bad_pagination_values_are_refused(world: Nms, query: str) -> None:
    assert world.master().get(f"/api/v1/accounts/?{query}").status_code == 400


def test_search_is_case_insensitive_substring(world: Nms) -> None:
    found = world.master().get("/api/v1/accounts/?search=ALPHA").json()["accounts"]
    assert [a["username"] for a in found] == ["ann@alpha.example"]


def test_usernames_with_at_sign_in_path(world: Nms) -> None:
    resp = world.master().get("/api/v1/accounts/ann@alpha.example/")
    assert resp.status_code == 200
    assert resp.json()["username"] == "ann@alpha.example"
