"""Application factory: wires the API, the control hooks, rate limiting, faults and the log."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import RequestRedirect

from nmsim import api, control
from nmsim.config import DEFAULT_MASTER, ConfigError, SimConfig
from nmsim.faults import FaultRule, html_page, json_response, render
from nmsim.model import ApiError
from nmsim.sim import Simulator


def create_app(**options: Any) -> Flask:
    """Build a simulator app.

    Options: `master` ("USER:PASSWORD"), `control` (mount /_sim/, default True), `seed`
    (a seed document applied at start and on every reset), `state_file` (a path: state loaded
    from it when it exists and written back after every non-GET request), `profile`
    (nmsim/profiles.py) and any SimConfig field (e.g. `rate_limit=0`, `token_ttl=60`).
    """
    master = options.pop("master", DEFAULT_MASTER)
    with_control = options.pop("control", True)
    seed = options.pop("seed", None)
    state_file = options.pop("state_file", None)
    config = SimConfig()
    try:
        config.update(options)
    except ConfigError as exc:
        raise TypeError(f"create_app: {exc}") from exc
    app = Flask(__name__)
    app.extensions["nmsim"] = Simulator(config, master, seed, state_file)
    app.config["NMSIM_CONTROL"] = bool(with_control)
    app.register_blueprint(api.bp)
    if with_control:
        app.register_blueprint(control.bp)
    app.before_request(_before)
    app.after_request(_after)
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _crash)
    return app


def _is_control() -> bool:
    return request.path.startswith("/_sim/") and bool(current_app.config["NMSIM_CONTROL"])


def _before() -> Response | None:
    """Downtime, ban, rate limit, faults and strict trailing slashes, in that order."""
    g.started = time.perf_counter()
    if _is_control():
        return None
    request.get_data(cache=True)  # read the body before any lock is taken
    s = api.sim()
    cfg = s.config
    with s.lock:
        now = s.clock.now()
        if s.faults.is_down(now):
            return html_page(503)
        refusal = s.limiter.check(
            request.remote_addr or "?",
            now,
            cfg.rate_limit,
            cfg.ban_after,
            cfg.ban_window,
            cfg.ban_seconds,
        )
        if refusal is not None:
            headers = {"Retry-After": str(refusal.retry_after)}
            if refusal.banned:
                body = {"error": "ip_banned", "message": "too many requests: IP banned"}
                return json_response(body, cfg.ban_status, headers)
            body = {"error": "rate_limited", "message": "rate limit exceeded"}
            return json_response(body, cfg.rate_limit_status, headers)
        fault = s.faults.pick(request.method, request.path, cfg.error_rate, cfg.error_kind)
        latency = cfg.latency_ms
        rate_status = cfg.rate_limit_status
    if fault is not None and fault.kind == "latency":
        latency += fault.ms
        fault = None
    if latency:
        time.sleep(latency / 1000)
    if fault is not None:
        if fault.after:
            g.fault_after = fault
        else:
            return _fault_response(fault, rate_status)
    if isinstance(request.routing_exception, RequestRedirect):
        raise NotFound("paths end with a slash; this one does not exist")
    return None


def _fault_response(fault: FaultRule, rate_status: int) -> Response:
    if fault.kind == "drop":
        sock = request.environ.get("werkzeug.socket")
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        g.dropped = True
        return html_page(502)
    return render(fault, rate_status)


def _after(response: Response) -> Response:
    """Apply an `after` fault, log the API request, write the state file after a change."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        api.sim().save()
    if _is_control():
        return response
    fault = g.pop("fault_after", None)
    if fault is not None:
        response = _fault_response(fault, api.sim().config.rate_limit_status)
    s = api.sim()
    rule = None if g.get("route_hidden") else request.url_rule
    with s.lock:
        s.log.add(
            {
                "method": request.method,
                "path": request.path,
                "route": rule.rule if rule is not None else None,
                "status": 0 if g.get("dropped") else response.status_code,
                "time": s.clock.now(),
                "user": g.get("auth_user"),
                "ip": request.remote_addr,
                "duration_ms": round((time.perf_counter() - g.get("started", 0.0)) * 1000, 3),
            },
            s.config.request_log_max,
        )
    return response


def _api_error(exc: ApiError) -> Response:
    return json_response(exc.body(), exc.status)


def _http_error(exc: HTTPException) -> Response:
    name = re.sub(r"[^a-z0-9]+", "_", (exc.name or "error").lower()).strip("_")
    response = json_response({"error": name, "message": exc.description or name}, exc.code or 500)
    allow = exc.get_response().headers.get("Allow")
    if allow:
        response.headers["Allow"] = allow
    return response


def _crash(exc: Exception) -> Response:
    """Uncaught exceptions answer an HTML page, as the NMS documents."""
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    current_app.logger.exception("unhandled error")
    return html_page(500)
