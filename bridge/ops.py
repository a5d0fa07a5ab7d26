"""Health endpoints for load balancers and monitoring."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from sqlalchemy import text

from bridge import metrics, migrate

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready to take hooks: database reachable, schema current, mail-server circuit closed."""
    checks: dict[str, dict[str, object]] = {}
    engine = current_app.extensions["bridge.engine"]
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        current, head = migrate.current_and_head(engine)
        checks["database"] = {"ok": True}
        checks["migrations"] = {
            "ok": current == head,
            "current": current,
            "head": head,
            **({} if current == head else {"fix": "run `bridge db upgrade`"}),
        }
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its name
        checks["database"] = {"ok": False, "error": exc.__class__.__name__}
    limiter = current_app.extensions["bridge.mailserver"].limiter
    if checks["database"]["ok"] and limiter is not None:
        gate = limiter.state()
        now = time.time()
        checks["mailserver"] = {
            "ok": not gate.circuit_open(now),
            "consecutive_failures": gate.failures,
            "circuit_open_for_s": max(0, round(gate.open_until - now)),
        }
    ready = all(c["ok"] for c in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), (
        200 if ready else 503
    )


@bp.get("/metrics")
def prometheus() -> ResponseReturnValue:
    """Prometheus text format: this app server's counters and the ledger's gauges."""
    limiter = current_app.extensions["bridge.mailserver"].limiter
    ledger = metrics.LedgerCollector(
        current_app.extensions["bridge.engine"], limiter.state if limiter is not None else None
    )
    body, content_type = metrics.exposition(ledger)
    return Response(body, content_type=content_type)
