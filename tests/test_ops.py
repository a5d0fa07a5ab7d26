"""/healthz and /readyz."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text, update

from bridge import migrate
from bridge.mailserver.ratelimit import GateState
from bridge.models import Gate
from bridge.web import runtime


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_when_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["checks"]["migrations"]["current"] == body["checks"]["migrations"]["head"]


def test_readyz_reports_an_open_circuit(app, client):
    limiter = runtime(app).mailserver.limiter
    assert limiter.state() == GateState(0, 0.0, 0.0)  # no row yet: a read creates none
    with runtime(app).engine.begin() as conn:
        conn.execute(insert(Gate).values(key=limiter.key, failures=7, open_until=time.time() + 60))
    response = client.get("/readyz")
    assert response.status_code == 503
    mailserver = response.get_json()["checks"]["mailserver"]
    assert mailserver == {
        "ok": False,
        "consecutive_failures": 7,
        "circuit_open_for_s": mailserver["circuit_open_for_s"],
        "blocked": "circuit_open",
        "blocked_until": mailserver["blocked_until"],
    }
    assert 50 <= mailserver["circuit_open_for_s"] <= 60


@pytest.mark.parametrize(
    ("values", "blocked"),
    [
        ({"open_until": 3600, "open_reason": "banned"}, "mailserver_banned"),
        ({"blocked_until": 3600}, "rate_limited"),
    ],
    ids=["ban", "retry-after"],
)
def test_readyz_reports_a_block_and_when_it_ends(app, client, values, blocked):
    limiter = runtime(app).mailserver.limiter
    limiter.acquire()  # a first call's slot creates the gate row
    end = int(time.time()) + 3600
    with runtime(app).engine.begin() as conn:
        conn.execute(
            update(Gate).values(**{k: v if isinstance(v, str) else end for k, v in values.items()})
        )
    response = client.get("/readyz")
    assert response.status_code == 503
    mailserver = response.get_json()["checks"]["mailserver"]
    assert mailserver["ok"] is False
    assert mailserver["blocked"] == blocked
    expected = datetime.fromtimestamp(end, UTC).isoformat().replace("+00:00", "Z")
    assert mailserver["blocked_until"] == expected


READYZ_PROBE = """
import json, sys
from bridge.adapters.samples import whmcs_envelope
from bridge.app import create_app
from bridge.config import parse_settings
from bridge.lifecycle import Action
from tests.builders import post_hook
from tests.conftest import base_config

app = create_app(parse_settings(base_config(sys.argv[1]), {}), configure_logs=False)
client = app.test_client()
ready = client.get("/readyz")
hook = post_hook(client, "whmcs", whmcs_envelope(Action.SUSPEND, 77))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("alembic", "mako"))
print(json.dumps({"readyz": ready.status_code, "hook": hook.status_code, "loaded": heavy}))
"""


def test_serving_readyz_and_a_hook_does_not_load_alembic(app, database_url):
    """A web worker's schema check is one query and the scripts' names: Alembic and Mako
    (about 10 MB per worker) stay out of a process that only serves."""
    done = subprocess.run(
        [sys.executable, "-c", READYZ_PROBE, database_url], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"readyz": 200, "hook": 202, "loaded": []}


def test_the_head_revision_read_from_the_scripts_is_alembics(app):
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate._config())
    assert migrate.head_revision() == scripts.get_current_head()


def test_readyz_reports_a_schema_behind_the_code(app, client):
    engine = runtime(app).engine
    head = migrate.head_revision()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        response = client.get("/readyz")
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
    assert response.status_code == 503
    assert response.get_json()["checks"]["migrations"] == {
        "ok": False,
        "current": "older",
        "head": head,
        "fix": "run `bridge db upgrade`",
    }


def test_the_commands_and_the_worker_do_not_load_flask():
    """`bridge worker` and the CLI import the bridge without the web faces (about 5 MB)."""
    probe = (
        "import sys, bridge.cli, bridge.provisioning.worker, bridge.support.actions; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'alembic')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
