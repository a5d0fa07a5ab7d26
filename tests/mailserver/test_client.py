"""The NMS client over real HTTP against the simulator: token reuse, error classification,
exact matching, pagination, secrets kept out of logs, TLS settings."""

from __future__ import annotations

import copy
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from urllib3.exceptions import InsecureRequestWarning
from werkzeug.serving import make_server as make_wsgi_server

from bridge.config import parse_settings
from bridge.mailserver import DomainAdmin, MailServer, PermanentError, TransientError
from bridge.mailserver.errors import MESSAGE_LIMIT
from bridge.passwords import check_and_hash
from bridge.runtime import build_mailserver
from bridge.web import runtime
from nmsim.app import create_app as create_sim_app
from nmsim.server import QuietHandler, ServerHandle
from tests.provisioning import conftest as provisioning
from tests.provisioning.conftest import MASTER_PASSWORD, Sim

# The live simulator fixtures of tests/provisioning, in scope here under their own names.
sim_server = provisioning.sim_server
sim = provisioning.sim
config_tree = provisioning.config_tree

AUTH = "/api/v1/auth/"
ACCOUNTS = "/api/v1/accounts/"
LIMITS = {"domains": 1, "domain_aliases": 1, "aliases": 10, "mailboxes": 5, "storage_mb": 5120}


@pytest.fixture
def server(app) -> MailServer:
    """The app's process-wide mail-server handle (shared token and limiter)."""
    return runtime(app).mailserver


@pytest.fixture
def make_server(app, config_tree) -> Iterator[Callable[..., MailServer]]:
    """Build another MailServer from the test config with some mailserver keys changed."""
    made: list[MailServer] = []

    def build(**mailserver: Any) -> MailServer:
        tree = copy.deepcopy(config_tree)
        tree["mailserver"].update(mailserver)
        built = build_mailserver(parse_settings(tree, {}), runtime(app).engine)
        made.append(built)
        return built

    yield build
    for built in made:
        built.http.close()


def api_entries(sim: Sim) -> list[dict[str, Any]]:
    """The request log without logins."""
    return [e for e in sim.requests() if e["path"] != AUTH]


def seed_admins(sim: Sim, names: list[str]) -> None:
    sim.seed({"accounts": [{"username": n, "perm_level": "DomainAdmin"} for n in names]})


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the token ---------------------------------------------------------------------------


def test_one_login_serves_many_calls_and_clients(server, sim):
    first = server.client()
    for i in range(8):
        assert first.find_domainadmin(f"nobody{i}") is None
    second = server.client()  # the next reconcile in the same process
    assert list(second.list_domainadmins()) == []

    entries = sim.requests()
    assert [e["path"] for e in entries].count(AUTH) == 1
    assert entries[0]["path"] == AUTH  # the login came first, then only API calls
    assert len(entries) == 10
    assert all(e["status"] == 200 and e["user"] == "admin" for e in entries)
    assert server.tokens.logins == 1


def test_a_revoked_token_means_one_new_login_then_the_call_succeeds(server, sim):
    seed_admins(sim, ["mail7"])
    client = server.client()
    for _ in range(3):
        assert isinstance(client.find_domainadmin("mail7"), DomainAdmin)
    old_token = server.tokens.token
    sim.ctl("DELETE", "tokens")
    sim.clear_log()

    found = client.find_domainadmin("mail7")

    assert isinstance(found, DomainAdmin) and found.username == "mail7"
    log = [(e["method"], e["path"], e["status"]) for e in sim.requests()]
    assert log == [("GET", ACCOUNTS, 401), ("POST", AUTH, 200), ("GET", ACCOUNTS, 200)]
    assert server.tokens.token not in (None, old_token)
    assert server.tokens.logins == 2
    # and the new token is reused from then on
    client.find_domainadmin("mail7")
    server.client().find_domainadmin("mail7")
    assert sim.logins() == 1


def test_a_second_401_after_a_fresh_login_is_permanent(server, sim):
    # tokens that are dead on arrival: every call answers 401, even right after a login
    sim.ctl("PATCH", "config", json={"token_ttl": 0})

    with pytest.raises(PermanentError) as caught:
        server.client().find_domainadmin("mail7")

    assert caught.value.reason == "mailserver_auth_failed"
    assert caught.value.status == 401
    log = [(e["path"], e["status"]) for e in sim.requests()]
    assert log == [(AUTH, 200), (ACCOUNTS, 401), (AUTH, 200), (ACCOUNTS, 401)]  # no loop


def test_a_short_lived_token_is_still_reused_while_valid(server, sim):
    """Regression (fixed in 6025f2b): with a fixed 300 s renewal margin, a token living
    less than that was never reused and every call cost a login."""
    sim.ctl("PATCH", "config", json={"token_ttl": 120})
    client = server.client()
    for i in range(5):
        client.find_domainadmin(f"nobody{i}")
    assert sim.logins() == 1


def test_the_token_is_renewed_shortly_before_it_expires_not_after(settings, sim):
    """A 24 h token is reused until a few minutes before its end, then replaced without
    waiting for a 401 (the client's clock is injected; the server's is real time)."""
    now = [time.time()]
    mailserver = MailServer(settings.mailserver, None, clock=lambda: now[0])
    try:
        client = mailserver.client()
        client.find_domainadmin("mail7")
        first = mailserver.tokens.token
        expires = mailserver.tokens.valid_to
        assert expires - now[0] == pytest.approx(86400, abs=5)

        now[0] = expires - 3600  # an hour left: keep it
        client.find_domainadmin("mail7")
        assert mailserver.tokens.token == first
        now[0] = expires - 60  # a minute left: renew before using it
        client.find_domainadmin("mail7")
        assert mailserver.tokens.token not in (None, first)
        statuses = [(e["path"], e["status"]) for e in sim.requests()]
        expected = [AUTH, ACCOUNTS, ACCOUNTS, AUTH, ACCOUNTS]
        assert statuses == [(path, 200) for path in expected]  # never a 401
    finally:
        mailserver.http.close()


def test_a_wrong_master_password_fails_for_good_without_leaking_it(make_server, sim, caplog):
    wrong = "Wrong-Master-Passw0rd-77"
    bad = make_server(password=wrong)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PermanentError) as caught:
        bad.client().find_domainadmin("mail7")

    error = caught.value
    assert error.reason == "mailserver_login_failed"
    assert "mailserver.password" in error.message  # tells staff what to fix
    for text in (error.message, str(error), repr(error), json.dumps(error.to_dict())):
        assert wrong not in text
    assert wrong not in caplog.text
    assert all(wrong not in r.getMessage() for r in caplog.records)
    # one refused login and no API call with a missing token
    assert [(e["path"], e["status"]) for e in sim.requests()] == [(AUTH, 401)]
    assert bad.tokens.token is None and bad.tokens.logins == 0


# ---- classification ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["html_500", "html_502", "html_503", "html_504", "json_500"])
def test_server_errors_and_gateway_pages_are_transient(server, sim, kind):
    client = server.client()
    client.find_domainadmin("warmup")  # logged in, so the fault hits the API call
    sim.fault(kind=kind, method="GET", path=ACCOUNTS)

    with pytest.raises(TransientError) as caught:
        client.find_domainadmin("mail7")

    status = int(kind.split("_")[1])
    assert (caught.value.reason, caught.value.status) == ("mailserver_unavailable", status)
    assert "<html>" not in caught.value.message and "nginx" not in caught.value.message
    assert client.calls[-1].status == status
    assert client.calls[-1].error == "mailserver_unavailable"
    assert server.limiter.state().failures == 1  # the circuit breaker heard about it
    # the fault is spent: the same call works again and closes the breaker
    assert client.find_domainadmin("mail7") is None
    assert server.limiter.state().failures == 0


def test_a_429_is_transient_with_its_retry_after(server, sim):
    client = server.client()
    client.find_domainadmin("warmup")
    sim.fault(kind="rate_limit", method="GET", path=ACCOUNTS, retry_after=2)
    before = time.time()

    with pytest.raises(TransientError) as caught:
        client.find_domainadmin("mail7")

    assert (caught.value.reason, caught.value.status) == ("rate_limited", 429)
    assert caught.value.retry_after == 2.0
    # every process sharing the database now holds off for Retry-After
    assert server.limiter.state().blocked_until >= before + 2


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_error_body_under_http_200_is_never_a_success(server, sim, method):
    client = server.client()
    client.find_domainadmin("warmup")
    # `after`: the server did its work, then the answer is an error body with HTTP 200
    sim.fault(kind="error_200", method=method, path=ACCOUNTS, after=True)

    with pytest.raises(TransientError) as caught:
        if method == "GET":
            client.find_domainadmin("mail7")
        else:
            client.create_domainadmin("mail7", check_and_hash("Good-Passw0rd-1"), "o@x.org", LIMITS)

    assert (caught.value.reason, caught.value.status) == ("error_body_with_200", 200)
    assert "simulated API error" in caught.value.message
    assert [e["status"] for e in api_entries(sim)][-1] == 200


def test_connection_refused_is_transient(make_server, sim):
    down = make_server(base_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(TransientError) as caught:
        down.client().find_domainadmin("mail7")
    assert caught.value.reason == "mailserver_unreachable"
    assert caught.value.status is None


def test_no_answer_within_the_read_timeout_is_transient(make_server, sim):
    slow = make_server(read_timeout_s=0.3)
    client = slow.client()
    client.find_domainadmin("warmup")
    sim.clear_log()
    sim.fault(kind="latency", ms=1200, method="GET", path=ACCOUNTS)

    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        client.find_domainadmin("mail7")
    elapsed = time.monotonic() - started

    assert caught.value.reason == "mailserver_timeout"
    assert elapsed < 1.0  # gave up after the read timeout, not when the server answered
    assert client.calls[-1].error == "mailserver_timeout"
    # the server answers later, to nobody; wait for it so the next test starts clean
    pause, deadline = threading.Event(), time.monotonic() + 10
    while not sim.requests() and time.monotonic() < deadline:
        pause.wait(0.05)
    assert [e["status"] for e in sim.requests()] == [200]


def test_a_conflict_is_permanent_with_the_servers_message(server, sim):
    seed_admins(sim, ["mail7"])
    with pytest.raises(PermanentError) as caught:
        server.client().create_domainadmin(
            "mail7", check_and_hash("Good-Passw0rd-1"), "o@x.org", LIMITS
        )
    assert (caught.value.reason, caught.value.status) == ("conflict", 409)
    assert "account mail7 already exists" in caught.value.message
    assert "account_exists" in caught.value.message


def test_a_validation_error_is_permanent_and_its_message_truncated(server, sim):
    seed_admins(sim, ["mail7"])
    changes = {f"no_such_field_with_a_long_name_{i:02d}": 1 for i in range(40)}
    with pytest.raises(PermanentError) as caught:
        server.client().update_account("mail7", changes)

    error = caught.value
    assert (error.reason, error.status) == ("rejected", 400)
    assert "field(s) not supported for a DomainAdmin" in error.message
    assert len(error.message) <= MESSAGE_LIMIT
    assert error.message.endswith("…")
    assert len(str(error)) <= MESSAGE_LIMIT


# ---- lookups --------------------------------------------------------------------------------


def test_find_domainadmin_matches_the_username_exactly(server, sim):
    seed_admins(sim, ["mail100", "mail1000", "xmail10"])
    client = server.client()
    assert client.find_domainadmin("mail10") is None

    seed_admins(sim, ["mail10"])
    found = client.find_domainadmin("mail10")
    assert isinstance(found, DomainAdmin) and found.username == "mail10"
    assert client.find_domainadmin("MAIL10").username == "mail10"


def test_find_domainadmin_looks_past_the_first_page(server, sim):
    # 60 accounts contain "mail10"; the exact one is listed last
    seed_admins(sim, [f"mail10{i:02d}" for i in range(60)] + ["mail10"])
    found = server.client().find_domainadmin("mail10")
    assert isinstance(found, DomainAdmin) and found.username == "mail10"
    assert len(api_entries(sim)) == 2


def test_find_domainadmin_reports_another_level_as_such(server, sim):
    sim.seed(
        {
            "domains": [{"domain": "taken.example"}],
            "accounts": [{"username": "boss@taken.example", "perm_level": "MailUser"}],
        }
    )
    found = server.client().find_domainadmin("boss@taken.example")
    assert not isinstance(found, DomainAdmin)
    assert (found.username, found.perm_level) == ("boss@taken.example", "MailUser")


def test_list_mailusers_keeps_only_the_exact_domains(server, sim):
    domains = ["example.com", "example.com.au", "myexample.com", "other.org"]
    sim.seed(
        {
            "domains": [{"domain": d} for d in domains],
            "accounts": [
                {"username": f"{local}@{d}", "perm_level": "MailUser", "enabled": enabled}
                for d in domains
                for local, enabled in (("ann", 1), ("bob", 0))
            ],
        }
    )
    users = server.client().list_mailusers(("example.com", "other.org"))
    assert [(u.username, u.domain, u.enabled) for u in users] == [
        ("ann@example.com", "example.com", True),
        ("ann@other.org", "other.org", True),
        ("bob@example.com", "example.com", False),
        ("bob@other.org", "other.org", False),
    ]


def test_list_domainadmins_pages_through_everything(server, sim):
    names = [f"reseller{i:03d}" for i in range(60)]
    seed_admins(sim, names)
    sim.seed(
        {
            "domains": [{"domain": "x.example"}],
            "accounts": [{"username": "u@x.example", "perm_level": "MailUser"}],
        }
    )
    admins = list(server.client().list_domainadmins())
    assert sorted(a.username for a in admins) == names
    assert len(api_entries(sim)) == 2  # 50 + 10


# ---- secrets and TLS ------------------------------------------------------------------------


def test_no_password_hash_or_token_in_any_log_line(server, sim, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("", "urllib3", "bridge", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)
    password_hash = check_and_hash("Customer-Passw0rd-9")
    client = server.client()
    client.create_domainadmin("mail7", password_hash, "owner@example.org", LIMITS)
    client.update_account("mail7", {"password": check_and_hash("Customer-Passw0rd-10")})
    tokens = [server.tokens.token]
    sim.ctl("DELETE", "tokens")
    client.find_domainadmin("mail7")  # 401, a fresh login, then the call
    tokens.append(server.tokens.token)
    sim.fault(kind="json_500", method="GET", path=ACCOUNTS)
    with pytest.raises(TransientError):
        client.find_domainadmin("mail7")

    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # really at DEBUG
    assert any("logged in" in r.getMessage() for r in caplog.records)
    secrets = [MASTER_PASSWORD, password_hash, password_hash.split("$")[-1], *tokens]
    lines = [caplog.text, *(r.getMessage() for r in caplog.records)]
    for secret in secrets:
        assert secret and all(secret not in line for line in lines)
    # what an attempt records about its calls carries no body and no credentials either
    recorded = json.dumps([c.as_dict() for c in client.calls])
    assert all(secret not in recorded for secret in secrets)


def test_tls_is_verified_by_default(server, make_server):
    assert server.http.verify is True
    assert make_server(verify_tls=True).http.verify is True


def test_a_ca_bundle_is_what_verifies(make_server, tmp_path):
    bundle = tmp_path / "internal-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n")
    assert make_server(ca_bundle=str(bundle)).http.verify == str(bundle)
    # an explicit bundle keeps verification on even next to verify_tls: false
    assert make_server(ca_bundle=str(bundle), verify_tls=False).http.verify == str(bundle)


def test_only_verify_tls_false_turns_verification_off(make_server):
    assert make_server(verify_tls=False, insecure_tls_i_understand=True).http.verify is False


@pytest.fixture(scope="module")
def tls_sim(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A second simulator behind TLS with a self-signed certificate: (https url, cert)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"]
        + ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    app = create_sim_app(rate_limit=0)
    wsgi = make_wsgi_server(
        "127.0.0.1",
        0,
        app,
        threaded=True,
        request_handler=QuietHandler,
        ssl_context=(str(cert), str(key)),
    )
    handle = ServerHandle(wsgi, app, "127.0.0.1")
    yield f"https://127.0.0.1:{handle.port}", cert
    handle.stop()


def test_a_certificate_nobody_vouches_for_is_refused(make_server, tls_sim):
    url, _cert = tls_sim
    strict = make_server(base_url=url)
    with pytest.raises(PermanentError) as caught:
        strict.client().find_domainadmin("mail7")
    assert "TLS certificate was not accepted" in caught.value.message
    assert strict.tokens.token is None


def test_a_tls_failure_on_the_first_call_is_reported_as_a_tls_failure(make_server, tls_sim):
    """Regression (fixed in 6025f2b): the login is every process's first call, and its
    TLS failure used to be reported as a refused password."""
    url, _cert = tls_sim
    with pytest.raises(PermanentError) as caught:
        make_server(base_url=url).client().find_domainadmin("mail7")
    assert caught.value.reason == "tls_verification_failed"
    assert "mailserver.password" not in caught.value.message


@pytest.fixture
def clean_ca_env(monkeypatch) -> None:
    """No CA-bundle variables that requests would read (as on a bare host)."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def test_the_configured_ca_bundle_is_what_verifies(make_server, tls_sim, clean_ca_env):
    url, cert = tls_sim
    trusting = make_server(base_url=url, ca_bundle=str(cert))
    assert trusting.http.verify == str(cert)
    assert trusting.client().find_domainadmin("mail7") is None
    assert trusting.tokens.logins == 1


def test_verify_tls_false_really_turns_verification_off(make_server, tls_sim, clean_ca_env):
    url, _cert = tls_sim
    careless = make_server(base_url=url, verify_tls=False, insecure_tls_i_understand=True)
    with pytest.warns(InsecureRequestWarning):
        assert careless.client().find_domainadmin("mail7") is None


@pytest.mark.parametrize("setting", ["ca_bundle", "verify_tls_false"])
def test_tls_settings_win_over_ca_variables_in_the_environment(
    make_server, tls_sim, monkeypatch, setting
):
    """Regression (fixed in 6025f2b): requests lets REQUESTS_CA_BUNDLE override a session's
    verify (psf/requests#3829), which silently ignored ca_bundle and verify_tls: false."""
    url, cert = tls_sim
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # public CAs only
    if setting == "ca_bundle":
        mailserver = make_server(base_url=url, ca_bundle=str(cert))
    else:
        mailserver = make_server(base_url=url, verify_tls=False, insecure_tls_i_understand=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureRequestWarning)
        assert mailserver.client().find_domainadmin("mail7") is None
