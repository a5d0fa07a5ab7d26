"""Health endpoints for load balancers and monitoring."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from bridge import metrics
from bridge.support.health import ledger_collector, readiness
from bridge.web import runtime

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready to take hooks: database reachable, schema current, mail-server circuit closed."""
    checks = readiness(runtime())
    ready = all(c["ok"] for c in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), (
        200 if ready else 503
    )


@bp.get("/metrics")
def prometheus() -> ResponseReturnValue:
    """Prometheus text format: this app server's counters and the ledger's gauges."""
    body, content_type = metrics.exposition(ledger_collector(runtime()))
    return Response(body, content_type=content_type)
