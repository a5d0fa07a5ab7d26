"""A body over intake.max_body_bytes is 413, also when it comes chunked (no Content-Length),
over a real socket: the threaded server of `live_url`, and gunicorn. Without the check the
body was cut at the limit, so a signed delivery failed its signature (401) instead.

The test config's limit is 4096 bytes.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy import func, select

from bridge.adapters.samples import whmcs_envelope
from bridge.lifecycle import Action
from bridge.models import Event
from tests.builders import signed_headers
from tests.provisioning.test_processes import serve_gunicorn

LIMIT = 4096


def body_of(size: int) -> bytes:
    """A valid WHMCS renew of exactly `size` bytes (JSON allows trailing spaces)."""
    body = json.dumps(whmcs_envelope(Action.RENEW, 77)).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def post(url: str, body: bytes, *, chunked: bool) -> tuple[int, dict[str, Any]]:
    """POST a signed body to /hooks/whmcs over a socket; chunked in 1000-byte pieces."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = signed_headers("whmcs", body)
    try:
        if chunked:
            pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
            conn.request("POST", "/hooks/whmcs", body=pieces, headers=headers, encode_chunked=True)
        else:
            conn.request("POST", "/hooks/whmcs", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def events(db) -> int:
    return db.scalar(select(func.count()).select_from(Event))


def answer_of(db, status: str) -> dict[str, Any]:
    """The answer to the newest stored event (a renew: applied at once)."""
    event = db.scalar(select(Event).order_by(Event.id.desc()).limit(1))
    return {
        "event_id": event.id,
        "status": status,
        "service": "77",
        "message": event.message,
    }


def check_limits(url: str, db) -> None:
    status, answer = post(url, body_of(LIMIT + 1), chunked=True)
    assert status == 413, answer
    assert answer["error"] == "request_entity_too_large" and answer["message"]
    status, answer = post(url, body_of(3 * LIMIT), chunked=True)
    assert status == 413, answer
    assert events(db) == 0
    # at the limit, chunked or not, the body is taken whole
    assert post(url, body_of(LIMIT), chunked=True) == (200, answer_of(db, "applied"))
    assert post(url, body_of(LIMIT - 1), chunked=True)[0] == 200
    assert post(url, body_of(LIMIT + 1), chunked=False)[0] == 413
    assert events(db) == 2


def test_a_chunked_body_over_the_limit_is_413_on_the_threaded_server(live_url, db):
    check_limits(live_url, db)


@pytest.fixture
def gunicorn_url(config_tree: dict[str, Any], tmp_path: Path) -> Iterator[str]:
    """The bridge under gunicorn (one worker), as deployed."""
    config_file = tmp_path / "bridge.yaml"
    config_file.write_text(yaml.safe_dump(config_tree), encoding="utf-8")
    with serve_gunicorn(config_file, tmp_path / "gunicorn.log") as (url, _):
        yield url


def test_a_chunked_body_over_the_limit_is_413_under_gunicorn(app, gunicorn_url, db):
    check_limits(gunicorn_url, db)
