"""What the NMS docs leave open, over real HTTP: empty searches as 200 [], 204 or 404, one
token for the whole fleet on a server that keeps one token per user, bans, Retry-After caps,
redirects, the environment, and usernames in paths."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from werkzeug.serving import make_server as make_wsgi_server
from werkzeug.wrappers import Request, Response

from bridge.config import parse_settings
from bridge.mailserver import DomainAdmin, MailServer, PermanentError, TransientError
from bridge.mailserver.ratelimit import RateLimiter
from bridge.runtime import build_mailserver, build_staff_reader
from bridge.web import runtime
from nmsim.server import QuietHandler
from tests.mailserver import test_client as base
from tests.mailserver.test_client import ACCOUNTS, AUTH, api_entries, seed_admins
from tests.provisioning.conftest import Sim

# The simulator and client fixtures of test_client.py, in scope here under their own names.
sim_server, sim, config_tree = base.sim_server, base.sim, base.config_tree
server, make_server = base.server, base.make_server

# ---- empty search ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["documented", "empty-404", "empty-204"])
def test_an_empty_search_means_no_such_account_however_it_is_said(server, sim, profile):
    sim.ctl("PATCH", "config", json={"profile": profile})
    client = server.client()
    assert client.find_domainadmin("nobody") is None
    assert client.list_mailusers(("nowhere.example",)) == []
    seed_admins(sim, ["mail7"])
    assert isinstance(client.find_domainadmin("mail7"), DomainAdmin)
    assert client.find_domainadmin("nobody2") is None
    statuses = [e["status"] for e in api_entries(sim)]
    expected = {"documented": 200, "empty-404": 404, "empty-204": 204}[profile]
    assert statuses.count(expected) >= 3
    if profile == "empty-404":
        # one call without a filter proved the list route exists; never again after that
        unfiltered = [e for e in api_entries(sim) if e["status"] == 200]
        assert len(unfiltered) == 2  # the proof, then the search that found mail7


@pytest.mark.parametrize("profile", ["empty-404", "empty-204"])
def test_a_page_past_the_end_ends_the_list(server, sim, profile):
    sim.ctl("PATCH", "config", json={"profile": profile})
    names = [f"reseller{i:03d}" for i in range(49)]  # 49 + the MasterAdmin = one full page
    seed_admins(sim, names)
    listed = [e["username"] for e in server.client()._list(ACCOUNTS, {})]
    assert len(listed) == 50
    assert [e["status"] for e in api_entries(sim)] == [200, 404 if profile == "empty-404" else 204]


def test_a_404_for_other_calls_keeps_its_meaning(server, sim):
    sim.ctl("PATCH", "config", json={"profile": "empty-404"})
    with pytest.raises(PermanentError) as caught:
        server.client().update_account("nobody", {"quota_mailboxes": 3})
    assert (caught.value.reason, caught.value.status) == ("not_found", 404)


@pytest.fixture
def tiny_server() -> Iterator[Callable[[Callable[[Request], Response]], tuple[str, list[str]]]]:
    """A small local HTTP server answering with `handler`; yields (url, requests seen)."""
    servers = []

    def start(handler: Callable[[Request], Response]) -> tuple[str, list[str]]:
        seen: list[str] = []

        @Request.application
        def app(request: Request) -> Response:
            seen.append(f"{request.method} {request.full_path}")
            return handler(request)

        wsgi = make_wsgi_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        thread = threading.Thread(target=wsgi.serve_forever, daemon=True)
        thread.start()
        servers.append((wsgi, thread))
        return f"http://127.0.0.1:{wsgi.server_port}", seen

    yield start
    for wsgi, thread in servers:
        wsgi.shutdown()
        wsgi.server_close()
        thread.join(timeout=10)


def json_answer(status: int, body: Any, **headers: str) -> Response:
    return Response(json.dumps(body), status, {"Content-Type": "application/json", **headers})


def login_ok(request: Request) -> Response | None:
    if request.path == AUTH:
        return json_answer(200, {"auth": {"status": "success", "auth_token": "t" * 40}})
    return None


def test_a_list_route_that_is_not_served_is_not_read_as_empty(make_server, tiny_server):
    """A 404 that would also come without any filter is a missing route (a wrong base_url),
    not "nothing found": creating on top of it would be a blind guess."""
    url, seen = tiny_server(
        lambda r: login_ok(r) or json_answer(404, {"error": "not_found", "message": "no route"})
    )
    with pytest.raises(PermanentError) as caught:
        make_server(base_url=url).client().find_domainadmin("mail7")
    assert caught.value.reason == "not_found"
    assert "check mailserver.base_url" in caught.value.message
    assert [s.split("?")[0] for s in seen] == ["POST /api/v1/auth/"] + ["GET /api/v1/accounts/"] * 2


# ---- one token for the fleet ----------------------------------------------------------------


def test_two_processes_share_one_login_on_a_single_token_server(app, config_tree, sim):
    """Two mail-server handles on one database stand for two processes (web worker and
    worker). On a server that keeps one token per user each login would revoke the other's
    token; sharing it through the database, 100 calls need one login and none fails."""
    sim.ctl("PATCH", "config", json={"profile": "single-token"})
    engine = runtime(app).engine
    settings = parse_settings(config_tree, {})
    fleet = [build_mailserver(settings, engine) for _ in range(2)]
    seed_admins(sim, ["mail7"])

    def calls(server: MailServer) -> int:
        client, found = server.client(), 0
        for _ in range(25):
            found += isinstance(client.find_domainadmin("mail7"), DomainAdmin)
        return found

    try:
        with ThreadPoolExecutor(4) as pool:  # two threads in each "process"
            results = list(pool.map(calls, [fleet[0], fleet[1], fleet[0], fleet[1]]))
    finally:
        for server in fleet:
            server.http.close()
    assert results == [25, 25, 25, 25]
    assert sim.logins() == 1
    assert sorted(s.tokens.logins for s in fleet) == [0, 1]
    assert {e["status"] for e in api_entries(sim)} == {200}
    assert len(api_entries(sim)) == 100


def test_staff_reads_share_the_fleets_token(app, config_tree, sim):
    """Staff reads go through a gate row of their own (their share of the rate), but the
    token is the fleet's: a process whose first call is a staff read logs in no more, and on
    a single-token server does not revoke the token provisioning uses."""
    sim.ctl("PATCH", "config", json={"profile": "single-token"})
    engine = runtime(app).engine
    settings = parse_settings(config_tree, {})
    seed_admins(sim, ["mail7"])
    provisioning = build_mailserver(settings, engine)
    other_process = build_mailserver(settings, engine)
    staff = build_staff_reader(settings, engine, other_process)
    try:
        assert isinstance(provisioning.client().find_domainadmin("mail7"), DomainAdmin)
        assert isinstance(staff.client().find_domainadmin("mail7"), DomainAdmin)
        assert isinstance(provisioning.client().find_domainadmin("mail7"), DomainAdmin)
    finally:
        provisioning.http.close()
        other_process.http.close()
    assert sim.logins() == 1
    assert {e["status"] for e in api_entries(sim)} == {200}


def test_a_revoked_token_costs_the_fleet_one_login(app, config_tree, sim):
    sim.ctl("PATCH", "config", json={"profile": "single-token"})
    engine = runtime(app).engine
    settings = parse_settings(config_tree, {})
    a, b = (build_mailserver(settings, engine) for _ in range(2))
    try:
        a.client().find_domainadmin("x")
        b.client().find_domainadmin("x")
        sim.ctl("DELETE", "tokens")  # e.g. the NMS restarted
        sim.clear_log()
        a.client().find_domainadmin("x")  # 401, one login, the call again
        b.client().find_domainadmin("x")  # 401, takes a's new token, the call again
        log = [(e["path"], e["status"]) for e in sim.requests()]
        assert log == [
            (ACCOUNTS, 401),
            (AUTH, 200),
            (ACCOUNTS, 200),
            (ACCOUNTS, 401),
            (ACCOUNTS, 200),
        ]
    finally:
        a.http.close()
        b.http.close()


def test_renewal_before_expiry_is_one_login_for_the_fleet(app, config_tree, sim):
    now = [time.time()]
    engine = runtime(app).engine
    settings = parse_settings(config_tree, {})
    fleet = []
    for _ in range(2):
        limiter = RateLimiter(engine, "renewal", 15.0, clock=lambda: now[0])
        fleet.append(MailServer(settings.mailserver, limiter, clock=lambda: now[0]))
    try:
        for server in fleet:
            server.client().find_domainadmin("x")
        later = fleet[0].tokens.renew_at + 1 - now[0]
        sim.ctl("POST", "clock", json={"advance": later})
        now[0] += later  # both are due: one logs in, the other takes its token
        for server in fleet:
            server.client().find_domainadmin("x")
        assert sim.logins() == 2
        assert fleet[0].tokens.token == fleet[1].tokens.token
    finally:
        for server in fleet:
            server.http.close()


def test_the_token_is_never_written_to_a_log_even_with_sql_logging(server, sim, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    server.client().find_domainadmin("x")
    token = server.tokens.token
    assert token and server.limiter.shared_token().token == token
    assert any("mailserver_gate" in r.getMessage() for r in caplog.records)  # SQL was logged
    assert token not in caplog.text


# ---- bans and Retry-After -------------------------------------------------------------------


def ban_this_address(sim: Sim) -> None:
    """Cross the simulator's rate limit until it bans 127.0.0.1 (its clock frozen)."""
    sim.ctl("POST", "clock", json={"freeze": True})
    sim.ctl("PATCH", "config", json={"rate_limit": 1, "ban_after": 2})
    for _ in range(3):
        sim.http.get(f"{sim.url}{ACCOUNTS}", timeout=10)


@pytest.mark.parametrize("profile", ["documented", "ban-403"])
def test_a_ban_pauses_every_process_for_its_length(server, sim, profile):
    sim.ctl("PATCH", "config", json={"profile": profile})
    client = server.client()
    client.find_domainadmin("warmup")
    ban_this_address(sim)

    with pytest.raises(TransientError) as caught:
        client.find_domainadmin("mail7")

    error = caught.value
    assert error.reason == "mailserver_banned"
    assert error.status == (403 if profile == "ban-403" else 429)
    assert error.retry_after == pytest.approx(3600, abs=2)
    assert "banned us until" in error.message
    state = server.limiter.state()
    assert state.open_reason == "banned" and state.failures == 0
    sim.clear_log()
    with pytest.raises(TransientError) as again:
        server.client().find_domainadmin("mail7")
    assert again.value.reason == "mailserver_banned"
    assert sim.requests() == []  # refused without knocking on the server again


def test_retry_after_is_capped(make_server, sim):
    capped = make_server(max_retry_after_s=60)
    client = capped.client()
    client.find_domainadmin("warmup")
    sim.fault(kind="rate_limit", method="GET", path=ACCOUNTS, retry_after=10**9)
    with pytest.raises(TransientError) as caught:
        client.find_domainadmin("mail7")
    assert caught.value.retry_after == 60
    assert capped.limiter.state().blocked_until <= time.time() + 61


def test_retry_after_as_an_http_date_is_understood_and_capped(make_server, tiny_server):
    def handler(request: Request) -> Response:
        return login_ok(request) or json_answer(
            429, {"error": "rate_limited"}, **{"Retry-After": "Fri, 31 Dec 2100 23:59:59 GMT"}
        )

    url, _seen = tiny_server(handler)
    with pytest.raises(TransientError) as caught:
        make_server(base_url=url).client().find_domainadmin("mail7")
    assert caught.value.reason == "rate_limited"
    assert caught.value.retry_after == 3600  # the default cap, not 75 years


# ---- redirects, the environment -------------------------------------------------------------


@pytest.mark.parametrize("where", ["login", "call"])
def test_a_redirect_is_never_followed(make_server, tiny_server, where):
    elsewhere, seen_elsewhere = tiny_server(lambda r: json_answer(200, {"accounts": []}))

    def handler(request: Request) -> Response:
        if where == "call" and request.path == AUTH:
            return login_ok(request) or Response("")
        return Response("", 302, {"Location": f"{elsewhere}/steal/"})

    url, seen = tiny_server(handler)
    with pytest.raises(PermanentError) as caught:
        make_server(base_url=url).client().find_domainadmin("mail7")
    error = caught.value
    assert (error.reason, error.status) == ("mailserver_redirect", 302)
    assert f"redirect to {elsewhere}/steal/" in error.message
    assert seen_elsewhere == []  # neither the password nor the token went there
    assert len(seen) == (1 if where == "login" else 2)


def test_proxy_variables_in_the_environment_are_ignored(make_server, sim, monkeypatch):
    from tests.mailserver.test_client import closed_port

    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    direct = make_server()
    assert direct.http.trust_env is False
    assert direct.client().find_domainadmin("mail7") is None  # went straight to the server


def test_the_insecure_switch_is_logged_at_every_start(make_server, caplog):
    caplog.set_level(logging.WARNING)
    make_server(base_url="http://mail.example.net", insecure_tls_i_understand=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "INSECURE" in r.getMessage() and "mail.example.net" in r.getMessage() for r in warnings
    )


# ---- usernames in paths -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mail7?enabled=0", "mail7#x", "mail%41", "mail 7"])
def test_usernames_are_one_path_segment(server, sim, name):
    """A username with ?, #, % or a space reaches the account route as that exact name;
    unencoded it would change the path (a query, a fragment, another name)."""
    client = server.client()
    client.find_domainadmin("warmup")
    sim.clear_log()
    with pytest.raises(PermanentError) as caught:
        client.update_account(name, {"quota_mailboxes": 3})
    assert caught.value.reason == "not_found"
    assert f"account {name} does not exist" in caught.value.message
    (entry,) = sim.requests()
    assert entry["route"] == "/api/v1/accounts/<username>/"
