"""Test and bench hooks under /_sim/ (not part of the NMS API, never rate limited or logged)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from nmsim.api import new_token, sim
from nmsim.config import ConfigError
from nmsim.faults import FaultError, json_response
from nmsim.model import invalid

bp = Blueprint("control", __name__, url_prefix="/_sim")


def _json() -> dict[str, Any]:
    data = request.get_json(silent=True) if request.get_data() else {}
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    return data


@bp.post("/reset")
def reset() -> Response:
    """Return to the startup state (config, clock, objects, tokens, bans, faults, log)."""
    sim().reset()
    return json_response({"reset": True}, 200)


@bp.post("/seed")
def seed() -> Response:
    """Add accounts, domains and forwarders without permission or quota checks."""
    s = sim()
    data = _json()
    with s.lock:
        counts = s.state.seed(data)
    return json_response({"seeded": counts}, 200)


@bp.get("/state")
def state() -> Response:
    """Dump objects (seed format plus computed fields), config, clock, bans and faults."""
    s = sim()
    with s.lock:
        now = s.clock.now()
        body = {
            **s.state.dump(),
            "config": s.config.to_dict(),
            "clock": s.clock.to_dict(),
            "rate_limiter": s.limiter.to_dict(now),
            "faults": s.faults.to_dict(now),
        }
    return json_response(body, 200)


@bp.get("/requests")
def requests_log() -> Response:
    """Return logged API requests after `?since=SEQ` plus counters by method/route/status."""
    raw = request.args.get("since", "0")
    if not raw.isdigit():
        raise invalid("since must be an integer >= 0")
    s = sim()
    with s.lock:
        return json_response(s.log.to_dict(int(raw)), 200)


@bp.delete("/requests")
def clear_requests() -> Response:
    """Clear the request log and its counters."""
    s = sim()
    with s.lock:
        s.log.clear()
    return json_response({"cleared": True}, 200)


@bp.get("/config")
def get_config() -> Response:
    """Return the runtime configuration."""
    s = sim()
    with s.lock:
        return json_response(s.config.to_dict(), 200)


@bp.patch("/config")
def patch_config() -> Response:
    """Change runtime configuration keys; answers the full configuration."""
    s = sim()
    data = _json()
    with s.lock:
        try:
            s.config.update(data)
        except ConfigError as exc:
            raise invalid(str(exc)) from exc
        if "error_seed" in data:
            s.faults.rng.seed(s.config.error_seed)
        return json_response(s.config.to_dict(), 200)


@bp.get("/clock")
def get_clock() -> Response:
    """Return the simulated time."""
    return json_response(sim().clock.to_dict(), 200)


@bp.post("/clock")
def set_clock() -> Response:
    """Apply `freeze` (bool), then `set` (UNIX time), then `advance` (seconds)."""
    s = sim()
    data = _json()
    unknown = set(data) - {"freeze", "set", "advance"}
    if unknown:
        raise invalid(f"unknown field(s): {', '.join(sorted(unknown))}")
    for key in ("set", "advance"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise invalid(f"{key} must be a number")
    if "freeze" in data and not isinstance(data["freeze"], bool):
        raise invalid("freeze must be a boolean")
    if "freeze" in data:
        s.clock.freeze(data["freeze"])
    if data.get("set") is not None:
        s.clock.set(data["set"])
    if data.get("advance") is not None:
        s.clock.advance(data["advance"])
    return json_response(s.clock.to_dict(), 200)


@bp.post("/verify")
def verify() -> Response:
    """Mark `domain`, or the list `domains`, or (empty body) every pending zone verified."""
    s = sim()
    data = _json()
    names: list[str] | None = None
    if "domain" in data:
        names = [data["domain"]]
    elif "domains" in data:
        names = data["domains"]
    if names is not None and not all(isinstance(n, str) for n in names):
        raise invalid("domains must be a list of names")
    with s.lock:
        return json_response({"verified": s.state.verify(names)}, 200)


@bp.post("/tokens")
def issue_token() -> Response:
    """Issue a token for `username` without a password (test shortcut)."""
    s = sim()
    username = _json().get("username")
    with s.lock:
        if username not in s.state.accounts:
            raise invalid("username must name an existing account")
        value, token = new_token(s, username)
    return json_response(
        {
            "username": username,
            "auth_token": value,
            "valid_from": token.valid_from,
            "valid_to": token.valid_to,
        },
        200,
    )


@bp.delete("/tokens")
def revoke_tokens() -> Response:
    """Revoke every token, or only those of `username`."""
    s = sim()
    username = _json().get("username")
    with s.lock:
        if username is None:
            s.state.tokens.clear()
        else:
            s.state.tokens.drop_user(username)
    return json_response({"revoked": True}, 200)


@bp.get("/faults")
def get_faults() -> Response:
    """Return queued faults and downtime."""
    s = sim()
    with s.lock:
        return json_response(s.faults.to_dict(s.clock.now()), 200)


@bp.post("/faults")
def add_faults() -> Response:
    """Queue one fault spec, or a list under `faults`; kind `down` starts downtime."""
    s = sim()
    data = _json()
    specs = data["faults"] if set(data) == {"faults"} else [data]
    if not isinstance(specs, list):
        raise invalid("faults must be a list")
    with s.lock:
        now = s.clock.now()
        saved = (list(s.faults.queue), s.faults.down_until)
        try:
            for spec in specs:
                s.faults.add(spec, now)
        except (FaultError, TypeError) as exc:
            s.faults.queue[:], s.faults.down_until = saved
            raise invalid(str(exc)) from exc
        return json_response(s.faults.to_dict(now), 200)


@bp.delete("/faults")
def clear_faults() -> Response:
    """Drop queued faults and end downtime."""
    s = sim()
    with s.lock:
        s.faults.queue.clear()
        s.faults.down_until = None
        return json_response(s.faults.to_dict(s.clock.now()), 200)
