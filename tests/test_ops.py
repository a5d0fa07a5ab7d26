"""/healthz and /readyz."""

from __future__ import annotations

import time

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
    }
    assert 50 <= mailserver["circuit_open_for_s"] <= 60
