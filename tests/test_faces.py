"""The bridge's two faces (bridge/app.py): the hooks face alone, the staff face alone, and
both from one server with the staff face built on its first request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bridge.adapters.samples import whmcs_envelope
from bridge.app import Faces, create_app, staff_app
from bridge.config import Settings
from bridge.lifecycle import Action
from bridge.web import runtime
from tests.builders import post_hook, signed_headers
from tests.provisioning.test_processes import serve_gunicorn


@contextmanager
def serving(settings: Settings, faces: Faces) -> Iterator[Any]:
    """A second app beside the `app` fixture's, its connections closed afterwards."""
    app = create_app(settings, configure_logs=False, faces=faces)
    try:
        yield app
    finally:
        runtime(app).engine.dispose()


STAFF_MODULES = ("bridge.admin", "bridge.api", "bridge.support.queries", "apispec")

FIRST_USE_PROBE = """
import json, sys
from bridge.adapters.samples import whmcs_envelope
from bridge.app import create_app
from bridge.config import parse_settings
from bridge.lifecycle import Action
from tests.builders import post_hook
from tests.conftest import base_config

def loaded():
    return sorted(m for m in sys.modules if m in json.loads(sys.argv[2]))

app = create_app(parse_settings(base_config(sys.argv[1]), {}), configure_logs=False)
client = app.test_client()
hook = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 77)).status_code
ready = client.get("/readyz").status_code
before = loaded()
login = client.get("/admin/login").status_code
print(json.dumps({"hook": hook, "readyz": ready, "before": before, "login": login,
                  "after": loaded()}))
"""


def test_one_server_loads_the_console_and_api_on_their_first_request(app, database_url):
    """Serving webhooks and health checks never imports the console, the API or apispec."""
    done = subprocess.run(
        [sys.executable, "-c", FIRST_USE_PROBE, database_url, json.dumps(STAFF_MODULES)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["hook"] == 202 and result["readyz"] == 200 and result["login"] == 200
    assert result["before"] == []
    assert result["after"] == sorted(STAFF_MODULES)


def test_one_server_answers_both_faces(client):
    assert client.get("/admin/login").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200
    assert client.get("/api/events").status_code == 401  # the API, asking for a token
    assert post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 78)).status_code == 202
    # A path that is neither face's: the shared JSON 404, from either app.
    for path in ("/nothing", "/admin/nothing", "/apis"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"


def test_the_staff_app_is_built_once(app, client):
    assert client.get("/admin/login").status_code == 200
    assert staff_app(app) is staff_app(app)
    assert "admin" in staff_app(app).blueprints and "admin" not in app.blueprints


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/admin/login"), ("POST", "/admin/login"), ("GET", "/api/events"), ("GET", "/api")],
)
def test_a_hooks_server_sends_staff_paths_elsewhere(settings: Settings, app, method, path):
    with serving(settings, "hooks") as hooks:
        response = hooks.test_client().open(path, method=method)
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "not_served_here"
    assert "staff" in body["message"]


def test_a_hooks_server_takes_hooks(settings: Settings, app):
    with serving(settings, "hooks") as hooks:
        client = hooks.test_client()
        assert post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 79)).status_code == 202
        assert client.get("/readyz").status_code == 200
        assert staff_app(hooks) is hooks  # nothing is built on the side


def test_a_staff_server_takes_no_hooks(settings: Settings, app):
    with serving(settings, "staff") as staff:
        client = staff.test_client()
        assert client.get("/admin/login").status_code == 200
        response = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 80))
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_an_unknown_face_is_refused(settings: Settings):
    with pytest.raises(ValueError, match="all, hooks, staff"):
        create_app(settings, configure_logs=False, faces="console")  # type: ignore[arg-type]


def test_the_split_deployment_under_gunicorn(config_tree: dict[str, Any], tmp_path: Path, app):
    """deploy/'s layout: `wsgi:hooks` and `wsgi:staff`, two gunicorns on one database."""
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    with (
        serve_gunicorn(config_file, tmp_path / "hooks.log", entry="wsgi:hooks") as (hooks, _),
        serve_gunicorn(config_file, tmp_path / "staff.log", entry="wsgi:staff") as (staff, _),
    ):
        body = json.dumps(whmcs_envelope(Action.SUSPEND, 81)).encode()
        answer = requests.post(
            f"{hooks}/hooks/whmcs", data=body, headers=signed_headers("whmcs", body), timeout=10
        )
        assert answer.status_code == 202, answer.text
        assert requests.get(f"{staff}/admin/login", timeout=10).status_code == 200
        refused = requests.get(f"{hooks}/admin/login", timeout=10)
        assert (refused.status_code, refused.json()["error"]) == (404, "not_served_here")
        assert requests.post(f"{staff}/hooks/whmcs", data=body, timeout=10).status_code == 404
