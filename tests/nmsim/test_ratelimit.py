"""Rate limit and bans ("Rate limit and bans" in nmsim/README.md); the sim clock makes it exact."""

from __future__ import annotations

import requests

from nmsim.server import start
from tests.nmsim.conftest import Nms


def burst(nms: Nms, count: int) -> list[int]:
    return [nms.anon.get("/api/v1/accounts/").status_code for _ in range(count)]


def test_default_is_20_per_second_with_ban() -> None:
    with start() as handle:
        config = requests.get(f"{handle.url}/_sim/config").json()
    assert config["rate_limit"] == 20
    assert config["ban_after"] > 0
    assert config["rate_limit_status"] == 429


def test_excess_gets_429_with_retry_after(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=20)
    statuses = burst(nms, 21)
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    resp = nms.anon.get("/api/v1/accounts/")
    assert resp.status_code == 429
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["error"] == "rate_limited"


def test_bucket_refills_with_time(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=5)
    assert burst(nms, 6)[-1] == 429
    nms.ctl.post("/_sim/clock", json={"advance": 1})
    assert burst(nms, 5) == [401] * 5


def test_refused_status_can_be_503(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=1, rate_limit_status=503)
    assert burst(nms, 2) == [401, 503]


def test_repeated_excess_gets_the_ip_banned(nms: Nms) -> None:
    """Profile documented: the ban answers the documented 429, Retry-After = the ban's length."""
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=1, ban_after=3, ban_seconds=3600)
    assert burst(nms, 4) == [401, 429, 429, 429]
    resp = nms.anon.get("/api/v1/accounts/")
    assert resp.status_code == 429
    assert resp.json()["error"] == "ip_banned"
    assert int(resp.headers["Retry-After"]) == 3600
    nms.ctl.post("/_sim/clock", json={"advance": 3599})
    assert nms.anon.get("/api/v1/accounts/").status_code == 429
    nms.ctl.post("/_sim/clock", json={"advance": 2})
    assert nms.anon.get("/api/v1/accounts/").status_code == 401


def test_ban_status_can_be_403(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=1, ban_after=1, ban_status=403)
    resp = [nms.anon.get("/api/v1/accounts/") for _ in range(2)][-1]
    assert (resp.status_code, resp.json()["error"]) == (403, "ip_banned")


def test_control_requests_are_not_limited(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    nms.config(rate_limit=1, ban_after=0)
    assert all(nms.ctl.get("/_sim/config").status_code == 200 for _ in range(30))
    assert burst(nms, 2) == [401, 429]


def test_zero_disables_the_limit(nms: Nms) -> None:
    nms.ctl.post("/_sim/clock", json={"freeze": True})
    assert set(burst(nms, 40)) == {401}
