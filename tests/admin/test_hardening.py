"""Small web hardening (issue 11, item 12): no placeholder secret key outside `make run`,
HSTS behind TLS, no caching of the API or the console, `Allow` on 405."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app import create_app
from bridge.config import load_config, parse_settings
from bridge.web import runtime

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def build(config_tree):
    made = []

    def make(**admin):
        config_tree["admin"].update(admin)
        app = create_app(parse_settings(config_tree, {}), configure_logs=False)
        made.append(app)
        return app.test_client()

    yield make
    for app in made:
        runtime(app).engine.dispose()


def test_a_placeholder_secret_key_switches_the_console_off(build):
    refused = build(secret_key="dev-only-secret-key-change-me").get("/admin/login")
    assert refused.status_code == 503
    text = refused.get_data(as_text=True)
    assert "admin.secret_key is a placeholder from the examples" in text
    assert "BRIDGE_SECRET_KEY" in text
    assert build(secret_key="CHANGE-ME-long-random").get("/admin/login").status_code == 503
    allowed = build(secret_key="dev-only-secret-key-change-me", allow_example_secret=True)
    assert allowed.get("/admin/login").status_code == 200


def test_only_make_run_accepts_the_example_files_key():
    example = ROOT / "config.example.yaml"
    copied = load_config(example, environ={})  # a copy used as it is, in production
    assert copied.admin.secret_key_refusal() is not None
    dev = load_config(example, environ={"BRIDGE_ALLOW_EXAMPLE_SECRET": "true"})
    assert dev.admin.secret_key_refusal() is None
    real = load_config(example, environ={"BRIDGE_SECRET_KEY": "k" * 40})
    assert real.admin.secret_key_refusal() is None
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "run: export BRIDGE_ALLOW_EXAMPLE_SECRET = true" in makefile


def test_hsts_only_when_cookies_are_https_only(build):
    secure = build(secure_cookies=True)
    for path in ("/healthz", "/admin/login", "/api/openapi.json", "/hooks/whmcs"):
        response = secure.get(path)
        assert response.headers["Strict-Transport-Security"] == "max-age=31536000", path
    assert "Strict-Transport-Security" not in build(secure_cookies=False).get("/healthz").headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/openapi.json"),
        ("GET", "/api/events"),  # 401 without a token
        ("GET", "/api/nothing-here"),  # 404
        ("DELETE", "/api/events"),  # 405
        ("GET", "/admin/login"),
        ("GET", "/admin/nothing-here"),
    ],
)
def test_api_and_console_answers_are_never_cached(client, method, path):
    response = client.open(path, method=method)
    assert response.headers["Cache-Control"] == "no-store", (path, response.status_code)


def test_a_405_says_which_methods_are_allowed(client):
    response = client.get("/hooks/whmcs")
    assert response.status_code == 405
    assert response.get_json()["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"].split(", ")
    assert response.headers["Content-Type"] == "application/json"
    unauthorized = client.get("/api/events")
    assert unauthorized.status_code == 401 and "Bearer" in unauthorized.headers["WWW-Authenticate"]
