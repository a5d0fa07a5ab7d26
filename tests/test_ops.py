"""/healthz and /readyz."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import update

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
    limiter.state()  # creates the gate row
    with runtime(app).engine.begin() as conn:
        conn.execute(update(Gate).values(failures=7, open_until=time.time() + 60))
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
    limiter.state()
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
