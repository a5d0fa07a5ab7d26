"""The /_sim/ test hooks: reset, seed, state, request log, config, clock, verify, faults."""

from __future__ import annotations

import pytest
import requests

from nmsim.server import start
from tests.nmsim.conftest import WORLD, Nms


def test_reset_restores_startup_state(world: Nms) -> None:
    world.config(token_ttl=5)
    world.ctl.post("/_sim/clock", json={"advance": 1000})
    assert world.ctl.post("/_sim/reset").json() == {"reset": True}
    state = world.ctl.get("/_sim/state").json()
    assert [a["username"] for a in state["accounts"]] == ["admin"]
    assert state["config"]["token_ttl"] == 86400
    assert abs(state["clock"]["offset"]) < 1


def test_seed_and_state_dump(nms: Nms) -> None:
    resp = nms.ctl.post("/_sim/seed", json=WORLD)
    assert resp.status_code == 200
    assert resp.json()["seeded"]["accounts"] == 4
    state = nms.ctl.get("/_sim/state").json()
    ann = next(a for a in state["accounts"] if a["username"] == "ann@alpha.example")
    assert (ann["owner"], ann["storagequota_used"]) == ("reseller-a", 403)
    alpha = next(d for d in state["domains"] if d["domain"] == "alpha.example")
    assert (alpha["owner"], alpha["verified"]) == ("reseller-a", True)
    assert {"config", "clock", "faults", "rate_limiter", "tokens"} <= set(state)


def test_seed_is_all_or_nothing(nms: Nms) -> None:
    bad = {
        "domains": [{"domain": "ok.example"}],
        "accounts": [{"username": "x@missing.example", "perm_level": "MailUser"}],
    }
    resp = nms.ctl.post("/_sim/seed", json=bad)
    assert resp.status_code == 400
    assert nms.ctl.get("/_sim/state").json()["domains"] == []


def test_seed_rejects_unknown_fields(nms: Nms) -> None:
    resp = nms.ctl.post(
        "/_sim/seed",
        json={"accounts": [{"username": "x", "perm_level": "MasterAdmin", "quota": 1}]},
    )
    assert resp.status_code == 400


def test_seed_explicit_owner_and_pending(nms: Nms) -> None:
    nms.seed(
        {
            "domains": [{"domain": "p.example", "verified": False, "owner": None}],
            "accounts": [
                {
                    "username": "da",
                    "perm_level": "DomainAdmin",
                    "domains": "p.example",
                    "quota_domains": 1,
                }
            ],
        }
    )
    master = nms.master()
    assert master.get("/api/v1/domains/").json()["domains_pending_verification"][0]["domain"] == (
        "p.example"
    )
    assert master.get("/api/v1/accounts/da/").json()["quota_domains_used"] == 0


def test_request_log_and_counters(world: Nms) -> None:
    world.ctl.delete("/_sim/requests")
    master = world.master()
    master.get("/api/v1/accounts/ann@alpha.example/")
    master.get("/api/v1/accounts/ghost/")
    world.ctl.get("/_sim/state")  # control requests are not logged
    log = world.ctl.get("/_sim/requests").json()
    assert log["total"] == 3
    entries = log["entries"]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("POST", "/api/v1/auth/", 200),
        ("GET", "/api/v1/accounts/ann@alpha.example/", 200),
        ("GET", "/api/v1/accounts/ghost/", 404),
    ]
    assert entries[1]["user"] == "admin"
    assert entries[1]["route"] == "/api/v1/accounts/<username>/"
    assert {"time", "ip", "seq", "duration_ms"} <= set(entries[0])
    counts = {(c["method"], c["route"], c["status"]): c["count"] for c in log["counts"]}
    assert counts[("GET", "/api/v1/accounts/<username>/", 200)] == 1
    assert counts[("GET", "/api/v1/accounts/<username>/", 404)] == 1
    since = world.ctl.get(f"/_sim/requests?since={entries[1]['seq']}").json()["entries"]
    assert [e["path"] for e in since] == ["/api/v1/accounts/ghost/"]
    world.ctl.delete("/_sim/requests")
    assert world.ctl.get("/_sim/requests").json()["total"] == 0


def test_config_roundtrip_and_validation(nms: Nms) -> None:
    resp = nms.ctl.patch("/_sim/config", json={"quota_below_usage": "allow", "rate_limit": 15})
    assert resp.json()["quota_below_usage"] == "allow"
    assert nms.ctl.get("/_sim/config").json()["rate_limit"] == 15
    for bad in (
        {"nope": 1},
        {"rate_limit": -1},
        {"quota_below_usage": "maybe"},
        {"count_pending": 1},
    ):
        assert nms.ctl.patch("/_sim/config", json=bad).status_code == 400


def test_clock_set_freeze_advance(nms: Nms) -> None:
    clock = nms.ctl.post("/_sim/clock", json={"freeze": True, "set": 2_000_000_000}).json()
    assert clock == {"now": 2_000_000_000, "frozen": True, "offset": clock["offset"]}
    assert nms.ctl.post("/_sim/clock", json={"advance": 60}).json()["now"] == 2_000_000_060
    assert nms.ctl.get("/_sim/clock").json()["now"] == 2_000_000_060
    resp = nms.anon.post(
        "/api/v1/auth/", json={"username": "admin", "password": "Sim-Master-Passw0rd"}
    )
    assert resp.json()["auth"]["valid_from"] == 2_000_000_060


def test_verify_all_pending(world: Nms) -> None:
    master = world.master()
    master.post("/api/v1/domains/", json={"domain": "a1.example"})
    master.post("/api/v1/domains/", json={"domain": "a2.example"})
    assert world.ctl.post("/_sim/verify", json={}).json() == {
        "verified": ["a1.example", "a2.example"]
    }
    assert world.ctl.post("/_sim/verify", json={"domain": "ghost.example"}).status_code == 404


def test_tokens_can_be_revoked(world: Nms) -> None:
    master = world.master()
    world.ctl.delete("/_sim/tokens", json={"username": "admin"})
    assert master.get("/api/v1/accounts/").status_code == 401


# ----- faults -----------------------------------------------------------------------------------


def test_html_504_deterministic_count(world: Nms) -> None:
    master = world.master()
    assert world.ctl.post("/_sim/faults", json={"kind": "html_504", "count": 3}).ok
    for _ in range(3):
        resp = master.get("/api/v1/accounts/")
        assert resp.status_code == 504
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "<html" in resp.text
    assert master.get("/api/v1/accounts/").status_code == 200


@pytest.mark.parametrize(
    ("kind", "status"), [("html_500", 500), ("html_502", 502), ("html_503", 503), ("json_500", 500)]
)
def test_error_kinds(world: Nms, kind: str, status: int) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": kind})
    assert master.get("/api/v1/accounts/").status_code == status


def test_error_body_with_http_200(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "error_200"})
    resp = master.get("/api/v1/accounts/")
    assert resp.status_code == 200
    assert "error" in resp.json() and "accounts" not in resp.json()


def test_rate_limit_fault(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "rate_limit", "retry_after": 7})
    resp = master.get("/api/v1/accounts/")
    assert (resp.status_code, resp.headers["Retry-After"]) == (429, "7")


def test_connection_drop(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "drop"})
    with pytest.raises(requests.ConnectionError):
        master.get("/api/v1/accounts/")
    assert master.get("/api/v1/accounts/").status_code == 200


def test_fault_filters_by_method_and_path(world: Nms) -> None:
    master = world.master()
    world.ctl.post(
        "/_sim/faults", json={"kind": "html_504", "method": "PATCH", "path": "/api/v1/accounts/"}
    )
    assert master.get("/api/v1/accounts/").status_code == 200
    assert master.patch("/api/v1/accounts/reseller-a/", json={"language": "de"}).status_code == 504
    assert world.account("reseller-a")["language"] == "en"


def test_fault_after_processing_keeps_the_change(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "html_504", "after": True})
    resp = master.patch("/api/v1/accounts/reseller-a/", json={"language": "de"})
    assert resp.status_code == 504
    assert world.account("reseller-a")["language"] == "de"


def test_downtime_on_sim_clock(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "down", "seconds": 300})
    resp = master.get("/api/v1/accounts/")
    assert resp.status_code == 503 and resp.headers["Content-Type"].startswith("text/html")
    world.ctl.post("/_sim/clock", json={"advance": 301})
    assert master.get("/api/v1/accounts/").status_code == 200


def test_downtime_until_cleared(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "down", "seconds": None})
    world.ctl.post("/_sim/clock", json={"advance": 3600})
    assert master.get("/api/v1/accounts/").status_code == 503
    world.ctl.delete("/_sim/faults")
    assert master.get("/api/v1/accounts/").status_code == 200


def test_random_errors_are_seeded(world: Nms) -> None:
    master = world.master()

    def run() -> list[int]:
        world.config(error_rate=0.5, error_seed=42)
        out = [master.get("/api/v1/accounts/").status_code for _ in range(30)]
        world.config(error_rate=0.0)
        return out

    first, second = run(), run()
    assert first == second
    assert 500 in first and 200 in first


def test_latency_fault_still_answers(world: Nms) -> None:
    master = world.master()
    world.ctl.post("/_sim/faults", json={"kind": "latency", "ms": 1})
    assert master.get("/api/v1/accounts/").status_code == 200


@pytest.mark.parametrize(
    "spec", [{"kind": "boom"}, {"kind": "html_504", "count": 0}, {"kind": "html_504", "x": 1}]
)
def test_bad_fault_specs_are_refused(nms: Nms, spec: dict[str, object]) -> None:
    assert nms.ctl.post("/_sim/faults", json=spec).status_code == 400
    assert nms.ctl.get("/_sim/faults").json()["queue"] == []


def test_faults_list_form_and_clear(nms: Nms) -> None:
    body = {"faults": [{"kind": "html_504"}, {"kind": "error_200", "count": 2}]}
    assert len(nms.ctl.post("/_sim/faults", json=body).json()["queue"]) == 2
    assert nms.ctl.delete("/_sim/faults").json()["queue"] == []


def test_no_control_mode_hides_the_hooks() -> None:
    with start(control=False, rate_limit=0) as handle:
        assert requests.post(f"{handle.url}/_sim/reset").status_code == 404
        assert requests.get(f"{handle.url}/api/v1/accounts/").status_code == 401


def test_state_dump_can_be_seeded_back(world: Nms) -> None:
    world.master().post(
        "/api/v1/aliases/", json={"alias": "i@alpha.example", "recipients": "x@y.z"}
    )
    before = world.ctl.get("/_sim/state").json()
    world.ctl.post("/_sim/reset")
    dump = {
        k: before[k]
        for k in ("domains", "relay_domains", "domain_aliases", "aliases", "sender_addresses")
    }
    dump["accounts"] = [a for a in before["accounts"] if a["username"] != "admin"]
    assert world.ctl.post("/_sim/seed", json=dump).status_code == 200
    after = world.ctl.get("/_sim/state").json()
    for key in ("domains", "aliases"):
        assert after[key] == before[key]
    assert after["accounts"][1:] == before["accounts"][1:]
