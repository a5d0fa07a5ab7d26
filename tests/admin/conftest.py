"""Staff console fixtures: staff members, logged-in clients, tokens, events, the simulator."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from bridge.adapters.samples import whmcs_envelope
from bridge.config import Settings, parse_settings
from bridge.db import utcnow
from bridge.lifecycle import Action
from bridge.models import StaffRole
from bridge.provisioning.jobs import run_once
from bridge.provisioning.outcome import Outcome
from bridge.support import staff as staff_mod
from bridge.web import runtime
from tests.builders import post_hook
from tests.provisioning.conftest import Sim, sim_server  # noqa: F401  (shared simulator)

PASSWORD = "Correct-Horse-9-Battery"
OPERATOR = "ops@example.com"
VIEWER = "look@example.com"
PRODUCTION_SCRYPT_N = staff_mod.SCRYPT_N


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at N=2^10 here: the tests log in often; test_auth checks the real cost."""
    monkeypatch.setattr(staff_mod, "SCRYPT_N", 2**10)
    monkeypatch.setattr(staff_mod, "_DUMMY_HASH", None)


@pytest.fixture
def sim(sim_server: Any) -> Iterator[Sim]:  # noqa: F811
    """The NMS simulator, reset; asking for it points the app at it."""
    helper = Sim(sim_server.url)
    helper.reset()
    yield helper
    helper.http.close()


@pytest.fixture
def config_tree(config_tree: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """Tests that use `sim` talk to it (inline apply on); the others see no mail server."""
    if "sim" in request.fixturenames:
        helper: Sim = request.getfixturevalue("sim")
        config_tree["mailserver"].update(base_url=helper.url, rate_limit_per_s=15)
        config_tree["intake"]["inline_timeout_s"] = 10
    return config_tree


def add_staff(app: Flask, email: str, role: StaffRole, password: str = PASSWORD) -> int:
    """Create a staff member in the app's database; return the id."""
    with runtime(app).transaction() as session:
        return staff_mod.add_staff(session, email, password, role, utcnow()).id


def make_token(app: Flask, email: str) -> str:
    """A fresh API token for a staff member."""
    with runtime(app).transaction() as session:
        user = staff_mod.find_staff(session, email)
        assert user is not None
        return staff_mod.issue_token(session, user, utcnow()).token


@pytest.fixture
def operator(app: Flask) -> str:
    """An operator's e-mail (password PASSWORD)."""
    add_staff(app, OPERATOR, StaffRole.OPERATOR)
    return OPERATOR


@pytest.fixture
def viewer(app: Flask) -> str:
    """A viewer's e-mail (password PASSWORD)."""
    add_staff(app, VIEWER, StaffRole.VIEWER)
    return VIEWER


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(response: TestResponse) -> str:
    """The first CSRF token in a page."""
    match = _CSRF.search(response.get_data(as_text=True))
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def log_in(
    client: FlaskClient, email: str, password: str = PASSWORD, **environ: Any
) -> TestResponse:
    """Log in through the login form, as a browser does."""
    page = client.get("/admin/login", environ_base=environ)
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_from(page)},
        environ_base=environ,
    )


def form_post(client: FlaskClient, page_url: str, action: str, **data: Any) -> TestResponse:
    """Submit a form of a page with the page's CSRF token."""
    token = csrf_from(client.get(page_url))
    return client.post(action, data={"csrf_token": token, **data})


@pytest.fixture
def as_operator(client: FlaskClient, operator: str) -> FlaskClient:
    """A client logged in as an operator."""
    assert log_in(client, operator).status_code == 302
    return client


@pytest.fixture
def as_viewer(client: FlaskClient, viewer: str) -> FlaskClient:
    """A client logged in as a viewer."""
    assert log_in(client, viewer).status_code == 302
    return client


def send(client: FlaskClient, action: Action, service: int = 1001, **options: Any) -> dict:
    """Post a signed WHMCS event; return the intake's answer."""
    response = post_hook(client, "whmcs", whmcs_envelope(action, service, **options))
    assert response.status_code < 400, response.get_data(as_text=True)
    return response.get_json()


def fixed_settings(config_tree: dict[str, Any], product: int, tier: str) -> Settings:
    """The settings an operator gets by mapping `product` in the config and restarting."""
    config_tree["products"]["whmcs"][product] = tier
    return parse_settings(config_tree, {})


@pytest.fixture
def drain(app: Flask) -> Callable[[datetime | None], list[Outcome]]:
    """Run the worker until nothing is due."""

    def run(now: datetime | None = None) -> list[Outcome]:
        outcomes = []
        for _ in range(100):
            outcome = run_once(runtime(app), now=now or utcnow())
            if outcome is None:
                return outcomes
            outcomes.append(outcome)
        raise AssertionError("still work due after 100 reconciles")

    return run
